"Tests of chexseg.classifier and chexseg.saliency: Grad-CAM against pytorch-grad-cam, threshold tuning, resume, DDP, checkpoints."
import os, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from chexseg.core import CHEXPERT_LABELS, PATHOLOGIES, CheckpointError, save_weights
from chexseg.classifier import Classifier, load_classifier, save_classifier, train_classifier
from chexseg.metrics import iou_masks
from chexseg.saliency import (THRESHOLD_GRID, WeakMaskDataset, WeakMaskRule, gradcam, otsu_masks, reference_gradcam,
                              saliency_maps, tune_thresholds, upsample_maps, weak_masks, weak_segmentation)


class Disks(Dataset):
    "Tiny item-contract dataset: a bright disk means Cardiomegaly and is its mask."
    def __init__(self, n=8, size=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.pos = torch.rand(n, generator=g) < 0.5
        self.centre = torch.randint(size // 4, 3 * size // 4, (n, 2), generator=g)
        self.noise = torch.rand(n, 1, size, size, generator=g) * 0.3
        self.size = size
    def __len__(self): return len(self.pos)
    def disk(self, i):
        yy, xx = torch.meshgrid(torch.arange(self.size), torch.arange(self.size), indexing='ij')
        return ((yy - self.centre[i, 0])**2 + (xx - self.centre[i, 1])**2 <= (self.size // 6)**2) & self.pos[i]
    def __getitem__(self, i):
        labels = torch.zeros(14); labels[CHEXPERT_LABELS.index('Cardiomegaly')] = float(self.pos[i])
        mask = torch.zeros(10, self.size, self.size, dtype=torch.uint8); mask[1] = self.disk(i)
        return {'id': f'disk{i}', 'image': (self.noise[i] + 0.6 * self.disk(i)).clamp(0, 1), 'labels': labels,
                'label_weights': torch.ones(14), 'mask': mask, 'has_mask': True}


class Dying(Dataset):
    "Raises after `after` items, as if the process were killed."
    def __init__(self, ds, after): self.ds, self.after, self.count = ds, after, 0
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        self.count += 1
        if self.count > self.after: raise RuntimeError('killed')
        return self.ds[i]


# ---------------------------------------------------------------- Grad-CAM

@pytest.mark.parametrize('arch,n', [('resnet18', 2), ('densenet121', 1)])
def test_gradcam_equals_pytorch_grad_cam(arch, n):
    torch.manual_seed(0)
    model, x = Classifier(arch).eval(), torch.rand(n, 1, 64, 64)
    ours = upsample_maps(gradcam(model, x).cams, 64)
    ref = reference_gradcam(model, x)   # all 10 classes, one forward + backward each
    assert ours.shape == ref.shape == (n, 10, 64, 64)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_inplace_relu_aliasing_is_avoided():
    "torchvision's DenseNet applies F.relu(inplace=True) to norm5's output; the Classifier's head ReLU must not."
    model = Classifier('densenet121').eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        A = model.features(x); kept = A.clone(); model.head(A)
    assert torch.equal(A, kept) and (A < 0).any()


@pytest.mark.parametrize('arch', ['resnet18', 'densenet121'])
def test_closed_form_equals_batched_autograd(arch):
    torch.manual_seed(1)
    model, x = Classifier(arch, PATHOLOGIES).eval(), torch.rand(3, 1, 64, 64)
    closed, autograd = gradcam(model, x, 'closed'), gradcam(model, x, 'autograd')
    torch.testing.assert_close(closed.cams, autograd.cams, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(closed.probs, autograd.probs)


# ---------------------------------------------------------------- weak masks

@pytest.mark.parametrize('seed,normalise', [(0, True), (1, True), (2, False)])
def test_threshold_tuning_equals_brute_force(seed, normalise):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(7, 10, 5, 5, generator=g) if normalise else torch.rand(7, 10, 40, 40, generator=g)
    masks = (torch.rand(7, 10, 40, 40, generator=g) < torch.rand(7, 10, 1, 1, generator=g)).to(torch.uint8)
    masks[:, 4] = 0; masks[0, 4, :10] = 1          # one pathology with a single positive image
    chosen, curve = tune_thresholds(maps, masks, normalise=normalise)
    up = upsample_maps(maps, 40) if normalise else maps
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)      # nanmean of all-NaN columns
        brute = np.stack([np.nanmean(iou_masks(masks, up > t), 0) for t in THRESHOLD_GRID], 1)
    np.testing.assert_allclose(curve, brute, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(chosen, np.asarray(THRESHOLD_GRID)[np.argmax(brute, 1)])


def test_otsu_equals_opencv():
    cv2 = pytest.importorskip('cv2')
    g = torch.Generator().manual_seed(0)
    maps = upsample_maps(torch.rand(4, 10, 3, 3, generator=g) ** 3, 48)
    ours = otsu_masks(maps)
    for m, o in zip(maps.flatten(0, 1), ours.flatten(0, 1)):
        ref = cv2.threshold((m.numpy() * 255).astype(np.uint8), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1]
        np.testing.assert_array_equal(o.numpy(), ref > 0)


def test_weak_masks_cached_and_written(tmp_path, monkeypatch):
    import chexseg.saliency as saliency
    clf = tmp_path/'clf.safetensors'
    torch.manual_seed(0); save_classifier(Classifier('resnet18'), clf)
    tune, target = Disks(4, 64, seed=1), Disks(3, 64, seed=2)
    with pytest.warns(UserWarning, match='No tuning image is positive'):
        weak = weak_masks(clf, target, {'disks': 3}, tune, {'disks': 4}, tmp_path)
    assert isinstance(weak.rule, WeakMaskRule) and len(weak) == 3
    assert len(list(tmp_path.rglob('rule.json'))) == 1 and len(list(tmp_path.rglob('maps.pt'))) == 2   # the rule, the tuning and target maps
    def computed(*args, **kwargs): raise AssertionError('computed again instead of read from the cache')
    monkeypatch.setattr(saliency, 'tune_rule', computed); monkeypatch.setattr(saliency, 'dataset_maps', computed)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                             # read back: no tuning, so no warning
        again = weak_masks(clf, target, {'disks': 3}, tune, {'disks': 4}, tmp_path)
    assert again.rule == weak.rule
    seg = weak_segmentation(weak)
    assert sorted(seg) == ['disk0', 'disk1', 'disk2'] and set(seg['disk0']) == set(PATHOLOGIES)
    assert seg['disk0']['Cardiomegaly']['size'] == [64, 64]


def test_weak_segmentation_at_original_resolution(tmp_path):
    "A letterboxed dataset (non-square images) gets its weak masks back at each image's own size."
    from chexseg.data import FolderDataset, write_folder_dataset
    rng = np.random.default_rng(0)
    shapes = {'wide': (48, 80), 'tall': (90, 60)}
    write_folder_dataset(tmp_path/'data', {k: rng.random(s).astype(np.float32) for k, s in shapes.items()})
    ds = FolderDataset(tmp_path/'data', size=64)
    clf = tmp_path/'clf.safetensors'
    torch.manual_seed(0); save_classifier(Classifier('resnet18'), clf)
    rule = WeakMaskRule('threshold', [0.5] * 10)
    weak = WeakMaskDataset(ds, saliency_maps(clf, ds, tmp_path, {'kind': 'folder', 'root': str(tmp_path/'data')}), rule)
    seg = weak_segmentation(weak)
    for cxr_id, shape in shapes.items():
        assert {tuple(r['size']) for r in seg[cxr_id].values()} == {shape}


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_errors(tmp_path):
    save_classifier(Classifier('resnet18'), tmp_path/'r18.safetensors')
    with pytest.raises(CheckpointError, match="not 'densenet121'"):
        load_classifier(tmp_path/'r18.safetensors', arch='densenet121')
    (tmp_path/'junk.safetensors').write_bytes(b'\x00' * 64)
    with pytest.raises(CheckpointError, match='junk.safetensors is not a safetensors checkpoint'):
        load_classifier(tmp_path/'junk.safetensors')
    save_weights({'w': torch.zeros(1)}, tmp_path/'seg.safetensors', arch='resnet18', stage='segmenter')
    with pytest.raises(CheckpointError, match='not a classifier'):
        load_classifier(tmp_path/'seg.safetensors')
    with pytest.raises(FileNotFoundError, match='missing.safetensors'):
        load_classifier(tmp_path/'missing.safetensors')


# ---------------------------------------------------------------- training

TINY = dict(arch='resnet18', batch_size=4, epochs=2, ckpt_every=2, seed=0, device='cpu')

def test_resume_equals_uninterrupted(tmp_path):
    ds = Disks(12, 32)
    whole = train_classifier(ds, tmp_path/'a', {'disks': 12}, **TINY)
    with pytest.raises(RuntimeError, match='killed'):       # dies in step 5 of 6, mid-epoch 2, after the step-4 checkpoint
        train_classifier(Dying(ds, 18), tmp_path/'b', {'disks': 12}, **TINY)
    resumed = train_classifier(ds, tmp_path/'b', {'disks': 12}, **TINY)
    a, b = load_classifier(whole).state_dict(), load_classifier(resumed).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _folder_dataset(root: Path, n=8, size=64):
    from chexseg.data import write_folder_dataset
    ds = Disks(n, size)
    items = [ds[i] for i in range(n)]
    labels = pd.DataFrame([it['labels'].numpy() for it in items], index=[it['id'] for it in items], columns=CHEXPERT_LABELS)
    write_folder_dataset(root, {it['id']: it['image'][0].numpy() for it in items}, labels)


def _cli(*args, nproc=1, cwd=None):
    script = Path(sys.executable).parent/'chexseg_train_classifier'
    cmd = [sys.executable, str(script), *args] if nproc == 1 else \
          [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', str(script), *args]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1])


def test_ddp_gloo_agrees_with_single_process(tmp_path):
    """2 gloo processes and 1 process, same global batch (8) and BatchNorm groups (bn_batch=2), 2 Adam steps.
    Both compute the same gradients up to float summation order; Adam's first steps (about lr * g / (|g| + 1e-8))
    magnify that rounding on the few weights whose gradient is ~1e-8, so weights are compared with robust statistics.
    (A wrong split, e.g. no bn_batch, gives a relative mean difference of about 1 and moves most weights by > lr/10.)"""
    _folder_dataset(tmp_path/'data', size=64)
    common = ['--dataset', 'folder', '--data_root', str(tmp_path/'data'), '--size', '64', '--arch', 'resnet18',
              '--batch_size', '8', '--epochs', '2', '--lr', '1e-3', '--bn_batch', '2', '--device', 'cpu']
    single = _cli(*common, '--out', str(tmp_path/'single'))
    ddp = _cli(*common, '--out', str(tmp_path/'ddp'), nproc=2)
    assert single.parent.name == ddp.parent.name                   # same settings, same cache key
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])
    torch.manual_seed(0); init = flat(Classifier('resnet18'))
    a, b = flat(load_classifier(single)), flat(load_classifier(ddp))
    diff, moved = (a - b).abs(), (a - init).abs()
    assert moved.mean() > 1e-4                                      # it trained
    assert diff.mean() / moved.mean() < 1e-3, (diff.mean() / moved.mean()).item()
    assert (diff > 1e-4).float().mean() < 1e-3
