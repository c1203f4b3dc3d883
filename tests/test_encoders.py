"Encoder initialisations: MoCo checkpoints as published, ImageNet weights from a file or the cache, clear errors when absent, exact MoCo resume."
import shutil, huggingface_hub, pytest, torch, torch.nn as nn, torch.nn.functional as F, torchvision
import segmentation_models_pytorch as smp
from safetensors.torch import save_file
from chexseg.core import CheckpointError, load_weights
from chexseg.classifier import dataset_from_spec
from chexseg.phantom import phantom_spec
from chexseg.encoders import (imagenet_encoder_state, imagenet_weights_file, init_available, init_encoder, load_encoder_state,
                              moco_encoder_state, pretrain_moco)
from chexseg.semi import build_segmenter, experiment_config, prepare_upstream, phantom_splits, segmenter_settings


def published_moco_checkpoint(path, dim=128, K=64):
    "A MoCo v2 ResNet18 checkpoint laid out as facebookresearch/moco and MoCo-CXR save it; returns its state_dict."
    q, k = torchvision.models.resnet18(), torchvision.models.resnet18()
    for net in (q, k): net.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, dim))
    sd = {**{f'module.encoder_q.{n}': v for n, v in q.state_dict().items()},
          **{f'module.encoder_k.{n}': v for n, v in k.state_dict().items()},
          'module.queue': F.normalize(torch.randn(dim, K), dim=0), 'module.queue_ptr': torch.zeros(1, dtype=torch.long)}
    torch.save({'epoch': 200, 'arch': 'resnet18', 'state_dict': sd,
                'optimizer': torch.optim.SGD(q.parameters(), lr=0.03, momentum=0.9).state_dict()}, path)
    return sd


@pytest.fixture
def tmp(tmp_path):
    "A temporary folder removed after the test (the checkpoints here are tens of MB each)."
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def empty_caches(tmp, monkeypatch):
    "Point the Hugging Face and torch hub caches at empty folders: the ImageNet weights are absent."
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp/'hf'))
    old = torch.hub.get_dir(); torch.hub.set_dir(str(tmp/'torchhub'))
    yield tmp
    torch.hub.set_dir(old)


def test_moco_checkpoint_in_published_layout_gives_the_query_backbone(tmp):
    sd = published_moco_checkpoint(tmp/'moco.pth.tar')
    state = moco_encoder_state(tmp/'moco.pth.tar', 'resnet18')
    own = smp.encoders.get_encoder('resnet18', in_channels=1).state_dict()
    assert set(state) == set(own)                                  # no head, no key encoder, no queue
    for k, v in state.items():
        q = sd[f'module.encoder_q.{k}']
        if k == 'conv1.weight': assert torch.allclose(v, q.sum(1, keepdim=True))   # RGB summed to one channel
        else: assert torch.equal(v, q), k
    assert not torch.equal(state['layer4.1.conv2.weight'], sd['module.encoder_k.layer4.1.conv2.weight'])
    m = init_encoder(build_segmenter(), 'moco', tmp/'moco.pth.tar')
    assert torch.equal(m.encoder.layer3[0].downsample[0].weight, sd['module.encoder_q.layer3.0.downsample.0.weight'])


def test_a_file_that_is_not_a_moco_checkpoint_is_refused_by_name(tmp):
    torch.save(torchvision.models.resnet18().state_dict(), tmp/'imagenet.pth')
    with pytest.raises(CheckpointError, match='imagenet.pth is not a MoCo checkpoint'): moco_encoder_state(tmp/'imagenet.pth')
    published_moco_checkpoint(tmp/'moco.pth.tar')
    with pytest.raises(CheckpointError, match='does not hold a resnet34 backbone'): moco_encoder_state(tmp/'moco.pth.tar', 'resnet34')


def test_missing_moco_file_says_what_to_do(tmp):
    with pytest.raises(FileNotFoundError, match=r'MoCo checkpoint not found: .*absent\.pth\.tar.*init_weights PATH'):
        moco_encoder_state(tmp/'absent.pth.tar')


def test_missing_imagenet_file_says_what_to_do(tmp, empty_caches):
    with pytest.raises(FileNotFoundError, match=r'absent\.pth.*init_weights PATH'): imagenet_encoder_state(tmp/'absent.pth')
    with pytest.raises(FileNotFoundError) as e: imagenet_encoder_state(None, 'resnet18')
    msg = str(e.value)
    assert 'smp-hub/resnet18.imagenet' in msg and str(tmp/'hf') in msg and 'init_weights PATH' in msg
    ok, why = init_available('imagenet')
    assert not ok and 'init_weights PATH' in why


def test_imagenet_weights_come_from_the_hugging_face_cache(empty_caches):
    s = smp.encoders.encoders['resnet18']['pretrained_settings']['imagenet']
    snap = empty_caches/'hf'/f"models--{s['repo_id'].replace('/', '--')}"/'snapshots'/s['revision']
    snap.mkdir(parents=True)
    rgb = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith('fc.')}
    save_file(rgb, str(snap/'model.safetensors'))
    assert imagenet_weights_file('resnet18') == snap/'model.safetensors'
    state = imagenet_encoder_state(None, 'resnet18')
    assert torch.allclose(state['conv1.weight'], rgb['conv1.weight'].sum(1, keepdim=True))
    assert torch.equal(state['layer4.0.downsample.1.running_mean'], rgb['layer4.0.downsample.1.running_mean'])
    assert init_available('imagenet')[0]


def test_imagenet_url_registry_entries_use_the_torch_hub_cache(empty_caches, monkeypatch):
    "segmentation-models-pytorch before 0.5 gave a URL; the file it names is looked for in torch hub's checkpoints."
    entry = dict(smp.encoders.encoders['resnet18'], pretrained_settings={'imagenet': {'url': 'https://download.pytorch.org/models/resnet18-5c106cde.pth'}})
    monkeypatch.setitem(smp.encoders.encoders, 'resnet18', entry)
    with pytest.raises(FileNotFoundError, match=r'resnet18-5c106cde\.pth in .*torchhub/checkpoints'): imagenet_weights_file('resnet18')
    (empty_caches/'torchhub'/'checkpoints').mkdir(parents=True)
    old = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.endswith('num_batches_tracked')}   # as the 2017 file
    torch.save(old, empty_caches/'torchhub'/'checkpoints'/'resnet18-5c106cde.pth')
    state = imagenet_encoder_state(None, 'resnet18')
    assert torch.equal(state['layer1.0.conv1.weight'], old['layer1.0.conv1.weight'])


def test_imagenet_absent_fails_before_any_training(tmp, empty_caches):
    cfg = experiment_config('smoke', encoder_init='imagenet')
    with pytest.raises(FileNotFoundError, match='init_weights PATH'): prepare_upstream(cfg, tmp/'runs', 'cpu')
    assert not (tmp/'runs').exists()


def test_segmenter_cache_keys_on_the_init_weights_file(tmp):
    cfg = experiment_config('smoke', p=1.0, encoder_init='moco')
    published_moco_checkpoint(tmp/'a.pth.tar'); published_moco_checkpoint(tmp/'b.pth.tar')
    key = lambda f: segmenter_settings(cfg, dict(specs=phantom_splits(cfg), cam_classifier=None, init_weights=f), 0)
    assert key(tmp/'a.pth.tar') != key(tmp/'b.pth.tar') and key(tmp/'a.pth.tar') == key(tmp/'a.pth.tar')


def test_pretrain_moco_resumes_exactly(tmp, capsys):
    spec = phantom_spec('train', 8, size=32)
    ds = dataset_from_spec(spec)
    kw = dict(steps=4, batch_size=4, ckpt_every=2, device='cpu', seed=3)
    whole = pretrain_moco(ds, tmp/'a', spec, **kw)
    assert pretrain_moco(ds, tmp/'b', spec, stop_after=2, **kw) is None
    assert not list((tmp/'b').rglob('moco.safetensors'))
    resumed = pretrain_moco(ds, tmp/'b', spec, **kw)
    assert 'resumed from' in capsys.readouterr().out
    (w, mw), (r, mr) = load_weights(whole, arch='moco-resnet18'), load_weights(resumed, arch='moco-resnet18')
    assert mw['losses'] == mr['losses'] and len(mw['losses']) == 4
    assert set(w) == set(r) and all(torch.equal(w[k], r[k]) for k in w)
    state = moco_encoder_state(resumed)
    load_encoder_state(build_segmenter(), state, resumed)
    assert torch.equal(state['layer2.0.conv1.weight'], r['encoder_q.layer2.0.conv1.weight'])


def test_different_pretraining_settings_do_not_share_a_cache(tmp):
    spec = phantom_spec('train', 4, size=32)
    ds = dataset_from_spec(spec)
    a = pretrain_moco(ds, tmp, spec, steps=1, batch_size=4, device='cpu')
    b = pretrain_moco(ds, tmp, spec, steps=1, batch_size=4, device='cpu', temperature=0.1)
    assert a != b and a.exists() and b.exists()


def test_moco_initialisation_end_to_end(tmp, capsys):
    "With no MoCo file, the segmenter CLI pre-trains MoCo v2 on the classifier pool and starts from its encoder."
    from chexseg.core import refusal
    from chexseg.semi import chexseg_train_segmenter
    chexseg_train_segmenter(['--scale', 'smoke', '--p', '1', '--encoder_init', 'moco', '--root', str(tmp), '--device', 'cpu'])
    path = capsys.readouterr().out.strip().splitlines()[-1]
    sd, meta = load_weights(path, arch='deeplabv3plus-resnet18')
    assert meta['init'] == 'moco' and len(meta['losses']) == 2
    moco, = (tmp/'moco').rglob('moco.safetensors')
    assert len(load_weights(moco, arch='moco-resnet18')[1]['losses']) == experiment_config('smoke')['moco_steps']
    err = refusal(chexseg_train_segmenter, ['--scale', 'smoke', '--encoder_init', 'moco', '--init_weights', str(tmp/'absent.pth'), '--root', str(tmp)])
    assert 'not found' in err and 'absent.pth' in err, err


def test_a_new_phantom_version_gets_new_study_folders(tmp, monkeypatch):
    import chexseg.encoder_study as es, chexseg.sweep as sweep
    run = es.study_runs(['random'], ['cam'], (2,))[1]
    cfg = es.study_config(run, 'smoke')
    before = es.study_run_dir(run, cfg, tmp)
    monkeypatch.setattr(sweep, 'PHANTOM_VERSION', sweep.PHANTOM_VERSION + 1)   # results_key reads it there
    assert es.study_run_dir(run, cfg, tmp) != before
