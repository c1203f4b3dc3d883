"Tests of chexseg.irnet: pair sampling, affinities, local vs dense random walk, the losses, a tiny training run."
import numpy as np
import pytest
import torch

from chexseg.core import read_json
from chexseg.irnet import (IGNORE, WALK_SETTINGS, CamDataset, boundary_to_affinity, cam_labels, irnet_losses,
                           pair_labels, propagate, propagate_dense, search_directions, segment_offsets, toy_blobs,
                           train_irnet)


def test_half_disk_directions():
    assert len(search_directions(10)) == 152      # IRNet's training radius
    assert len(search_directions(5)) == 34        # IRNet's inference radius
    assert len(search_directions(3)) == 12        # CheXseg's inference radius
    dirs = search_directions(10)
    assert len(set(dirs)) == len(dirs)
    assert not any((-dy, -dx) in dirs for dy, dx in dirs)          # each unordered pair once
    assert all(dy * dy + dx * dx < 100 and (dy > 0 or dx > 0) for dy, dx in dirs)


def test_affinity_is_one_minus_max_boundary_on_segment():
    g = torch.Generator().manual_seed(1)
    b = torch.rand(5, 6, generator=g, dtype=torch.float64)
    aff = boundary_to_affinity(b[None, None], 4)[0]
    for k, (dy, dx) in enumerate(search_directions(4)):
        for i in range(5):
            for j in range(6):
                inside = 0 <= i + dy < 5 and 0 <= j + dx < 6
                want = 1 - max(b[i + y, j + x] for y, x in segment_offsets(dy, dx)) if inside else 0.
                assert abs(aff[k, i, j] - want) < 1e-12


@pytest.mark.parametrize('setting', ['irnet', 'chexseg'])
def test_local_walk_matches_dense_reference(setting):
    g = torch.Generator().manual_seed(0)
    boundary = torch.rand(2, 1, 10, 9, generator=g, dtype=torch.float64) ** 3
    cams = torch.rand(2, 10, 10, 9, generator=g, dtype=torch.float64)
    local = propagate(cams, boundary, **WALK_SETTINGS[setting])
    dense = propagate_dense(cams, boundary, **WALK_SETTINGS[setting])
    assert ((local - dense).abs().max() / dense.abs().max()) < 1e-5


def test_local_walk_fp32():
    # in fp32, 8 steps (CheXseg) stay within 1e-5 of the fp64 reference; 256 steps (IRNet) accumulate rounding
    # to ~1e-4, the same order as the dense fp32 reference's own error
    g = torch.Generator().manual_seed(0)
    boundary = torch.rand(2, 1, 10, 9, generator=g, dtype=torch.float64) ** 3
    cams = torch.rand(2, 10, 10, 9, generator=g, dtype=torch.float64)
    for setting, tol in (('chexseg', 1e-5), ('irnet', 1e-3)):
        dense = propagate_dense(cams, boundary, **WALK_SETTINGS[setting])
        local32 = propagate(cams.float(), boundary.float(), **WALK_SETTINGS[setting])
        assert local32.dtype == torch.float32
        assert ((local32.double() - dense).abs().max() / dense.abs().max()) < tol


def _row(probs, dx, labels):
    "One row of pixels: boundary logits, displacements (dy = 0) and labels, as 4-d tensors."
    p = torch.tensor(probs)
    logits = torch.log(p / (1 - p)).view(1, 1, 1, -1)
    disp = torch.stack([torch.zeros(len(dx)), torch.tensor(dx)]).view(1, 2, 1, -1)
    return logits, disp, torch.tensor(labels, dtype=torch.uint8).view(1, 1, 1, -1)


def test_affinity_losses_hand_made():
    # pairs (0,1) fg-fg, (1,2) fg-bg, (2,3) bg-bg; affinities 1 - max(b): 0.8, 0.5, 0.5
    L = irnet_losses(*_row([0.1, 0.2, 0.5, 1e-9], [0, 0, 0, 0], [1, 1, 0, 0]), radius=2)
    assert abs(L['fg_aff'] - (-np.log(0.8 + 1e-5))) < 1e-4
    assert abs(L['bg_aff'] - (-np.log(0.5 + 1e-5))) < 1e-4
    assert abs(L['neg_aff'] - (-np.log(1 - 0.5 + 1e-5))) < 1e-4


def test_affinity_losses_average_over_pairs():
    # two fg pairs with affinities 0.9 and 0.6: the fg loss is the mean of their -log a
    L = irnet_losses(*_row([0.1, 0.1, 0.4], [0, 0, 0], [1, 1, 1]), radius=2)
    assert abs(L['fg_aff'] - (-np.log(0.9) - np.log(0.6)) / 2) < 1e-4
    assert L['bg_aff'] == 0 and L['neg_aff'] == 0


def test_foreground_displacement_loss_hand_made():
    # fg pair (0,1): D0 - D1 = (0, 1) = its offset -> 0; off by 0.5 in x -> 0.5 / 2 coordinates
    exact = irnet_losses(*_row([0.1, 0.1, 0.1, 0.1], [0.5, -0.5, 0, 0], [1, 1, 0, 0]), radius=2)
    off = irnet_losses(*_row([0.1, 0.1, 0.1, 0.1], [0.5, 0.0, 0, 0], [1, 1, 0, 0]), radius=2)
    assert abs(exact['fg_disp']) < 1e-5
    assert abs(off['fg_disp'] - 0.25) < 1e-4


def test_background_displacement_loss_hand_made():
    # bg pair (2,3): any difference of displacements is penalised: |1 - 0| / 2 coordinates
    same = irnet_losses(*_row([0.1, 0.1, 0.1, 0.1], [0, 0, 3, 3], [1, 1, 0, 0]), radius=2)
    differ = irnet_losses(*_row([0.1, 0.1, 0.1, 0.1], [0, 0, 1, 0], [1, 1, 0, 0]), radius=2)
    assert abs(same['bg_disp']) < 1e-5
    assert abs(differ['bg_disp'] - 0.5) < 1e-4


def test_total_and_ignored_pathologies():
    logits, disp, lab = _row([0.1, 0.2, 0.5, 1e-9], [0.5, 0, 1, 0], [1, 1, 0, 0])
    L = irnet_losses(logits, disp, lab, radius=2)
    want = (L['fg_aff'] / 2 + L['bg_aff'] / 2 + L['neg_aff']) / 2 + (L['fg_disp'] + L['bg_disp']) / 2
    assert abs(L['total'] - want) < 1e-6
    both = irnet_losses(logits, disp, torch.cat([lab, torch.full_like(lab, IGNORE)], 1), radius=2)
    assert abs(both['total'] - L['total']) < 1e-6


def test_labels_and_pairs():
    cams = torch.tensor([[[[0.9, 0.2, 0.01, 0.95]]]])
    lab = cam_labels(cams, torch.tensor([[True]]))
    assert lab.flatten().tolist() == [1, IGNORE, 0, 1]
    assert cam_labels(cams, torch.tensor([[False]])).eq(IGNORE).all()
    fg, bg, neg = pair_labels(lab[:, 0], radius=2)
    assert fg.sum() == 0 and bg.sum() == 0 and neg.sum() == 1      # (0,1), (1,2) touch the ignored pixel; (2,3) is bg-fg
    assert neg[0, search_directions(2).index((0, 1)), 0, 2]
    fg, bg, neg = pair_labels(torch.tensor([[[1, 1, 0]]], dtype=torch.uint8), radius=2)
    assert fg.sum() == 1 and bg.sum() == 0 and neg.sum() == 1


def test_tiny_training_lowers_the_loss(tmp_path):
    toy = toy_blobs(4, 32, seed=0)
    ds = CamDataset(toy['images'], toy['cams'], toy['positive'])
    w = train_irnet(ds, tmp_path, data={'toy': 4}, epochs=8, batch_size=4, radius=3, ckpt_every=100, device='cpu')
    losses = read_json(w.parent/'train_log.json')['losses']
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_a_cached_irnet_fetches_no_films(tmp_path, monkeypatch):
    "On CUDA IRNet's training films go to the GPU first (`on_device_if_cuda`); a cached IRNet must not pay for that: every sweep run asks for it."
    import chexseg.irnet as irnet
    from chexseg.classifier import Classifier, save_classifier
    from chexseg.phantom import phantom_spec, phantom_from_spec
    clf = tmp_path/'clf.safetensors'
    torch.manual_seed(0); save_classifier(Classifier('resnet18'), clf)
    spec = phantom_spec('train', 4, size=32); films = phantom_from_spec(spec)
    settings = dict(batch_size=4, device='cpu', epochs=1, radius=3)
    w = irnet.irnet_weights(clf, films, spec, tmp_path, **settings)
    def fetched(*args, **kwargs): raise AssertionError('the films of a cached IRNet were fetched')
    monkeypatch.setattr(irnet, 'on_device_if_cuda', fetched)
    assert irnet.irnet_weights(clf, films, spec, tmp_path, **settings) == w
    with pytest.raises(AssertionError, match='were fetched'): irnet.irnet_weights(clf, films, spec, tmp_path, **dict(settings, epochs=2))
