"Tests of the phantom generator: determinism, anatomy-consistent masks, label noise rates, the written folder, errors."
import hashlib, subprocess, sys

import numpy as np
import pytest
import torch

from chexseg.core import CHEXPERT_LABELS, PATHOLOGIES, chexpert_name
from chexseg.data import CheXpertDataset, annotation_to_masks, read_annotation_json, read_chexpert_csv
from chexseg.phantom import (PhantomConfig, PhantomDataset, chexseg_phantom, phantom_split, render_batch,
                             simulate_readers, simulate_report, write_phantom)

SIZE = 64
LUNG_FINDINGS = [PATHOLOGIES.index(p) for p in ('Lung Lesion', 'Airspace Opacity', 'Edema', 'Consolidation',
                                                'Atelectasis', 'Pneumothorax', 'Pleural Effusion')]

@pytest.fixture(scope='module')
def batch():
    return render_batch(0, range(12), SIZE)

def _digest(out) -> str:
    return hashlib.sha256(out['image'].numpy().tobytes() + out['masks'].numpy().tobytes()).hexdigest()

def test_same_pixels_whatever_the_batch(batch):
    for idx in ([5], [11, 5, 0], list(range(5, 9))):
        out = render_batch(0, idx, SIZE)
        for j, i in enumerate(idx):
            assert torch.equal(out['image'][j], batch['image'][i]) and torch.equal(out['masks'][j], batch['masks'][i])
    again = render_batch(0, range(12), SIZE)
    assert _digest(again) == _digest(batch)
    assert _digest(render_batch(1, range(12), SIZE)) != _digest(batch)

def test_same_pixels_in_another_process(batch):
    code = ("import hashlib, torch; from chexseg.phantom import render_batch; o = render_batch(0, [3, 7], 64); "
            "print(hashlib.sha256(o['image'].numpy().tobytes() + o['masks'].numpy().tobytes()).hexdigest())")
    other = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    here = {'image': batch['image'][[3, 7]], 'masks': batch['masks'][[3, 7]]}
    assert other == _digest(here)

def test_dataset_items_are_deterministic():
    ds = PhantomDataset(8, size=SIZE, seed=3)
    a, b = ds[4], ds.get_batch([6, 4], device='cpu')
    assert torch.equal(a['image'], b['image'][1]) and torch.equal(a['mask'], b['mask'][1])
    assert torch.equal(a['labels'], b['labels'][1]) and a['id'] == b['id'][1]

def test_masks_inside_body_and_lungs(batch):
    masks = batch['masks'].bool()
    assert not (masks & ~batch['body'][:, None]).any()
    assert not (masks[:, LUNG_FINDINGS] & ~batch['lungs'][:, None]).any()
    forced = render_batch(2, range(6), SIZE, PhantomConfig(prevalence={'Lung Lesion': 1, 'Pneumothorax': 1, 'Pleural Effusion': 1}))
    m = forced['masks'].bool()
    assert m[:, LUNG_FINDINGS].flatten(2).any(2).sum() > 6
    assert not (m[:, LUNG_FINDINGS] & ~forced['lungs'][:, None]).any()

def test_labels_follow_masks(batch):
    cols = [CHEXPERT_LABELS.index(chexpert_name(p)) for p in PATHOLOGIES]
    assert torch.equal(batch['labels'][:, cols], batch['masks'].flatten(2).any(2))

def test_prevalence_override():
    rate = lambda cfg: render_batch(0, range(40), 32, cfg)['labels'][:, CHEXPERT_LABELS.index('Cardiomegaly')].float().mean()
    assert rate(PhantomConfig(prevalence={'Cardiomegaly': 1.0})) == 1
    assert rate(PhantomConfig(prevalence={'Cardiomegaly': 0.0})) == 0

@pytest.mark.parametrize('rates', [dict(uncertain_rate=0.1, miss_rate=0.05, spurious_rate=0.02, hedge_rate=0.03, negation_rate=0.3),
                                   dict(uncertain_rate=0.3, miss_rate=0.2, spurious_rate=0.1, hedge_rate=0.1, negation_rate=0.7)])
def test_label_noise_rates(rates):
    n = 20000
    truth = torch.zeros(n, 14, dtype=torch.bool)
    truth[: n // 2, 1:] = True
    rep = simulate_report(truth, 5, range(n), PhantomConfig(**rates))
    pos, neg = rep[: n // 2, 1:], rep[n // 2:, 1:]
    def check(observed, p):
        assert abs(observed - p) < 4 * (p * (1 - p) / pos.numel()) ** 0.5 + 1e-9, (observed, p)
    check((pos == -1).float().mean().item(), rates['uncertain_rate'])
    check(pos.isnan().float().mean().item(), rates['miss_rate'])
    check((pos == 1).float().mean().item(), 1 - rates['uncertain_rate'] - rates['miss_rate'])
    check((neg == 1).float().mean().item(), rates['spurious_rate'])
    check((neg == -1).float().mean().item(), rates['hedge_rate'])
    check((neg == 0).float().mean().item(), (1 - rates['spurious_rate'] - rates['hedge_rate']) * rates['negation_rate'])

def test_readers_imperfect(batch):
    rd = simulate_readers(batch['masks'], batch['lungs'], 0, range(12), 3)
    assert rd.shape == (12, 3, 10, SIZE, SIZE) and rd.dtype == torch.uint8
    assert not torch.equal(rd[:, 0], batch['masks'])

def test_folder_round_trip(tmp_path):
    meta = write_phantom(tmp_path, n_train=3, n_valid=2, n_test=4, size=SIZE, seed=0, fmt='png')
    assert meta['counts'] == {'train': 3, 'valid': 2, 'test': 4}
    for split, suffix, n in (('valid', 'val', 2), ('test', 'test', 4)):
        back = CheXpertDataset(tmp_path, tmp_path/'CheXpert-v1.0'/f'{split}.csv', tmp_path/f'gt_segmentations_{suffix}.json', size=SIZE)
        ann = read_annotation_json(tmp_path/f'gt_annotations_{suffix}.json')
        ph = phantom_split(split, n, SIZE)
        assert len(back) == n
        for i in range(n):
            a, b = back[i], ph[i]
            assert a['id'] == b['id'] and a['has_mask']
            assert torch.equal(a['mask'], b['mask'])
            assert torch.equal(a['labels'], b['labels'])
            assert (a['image'] - b['image']).abs().max() <= 0.5 / 255 + 1e-6
            polys = annotation_to_masks(ann[a['id']])
            assert (polys != b['mask'].numpy()).mean() < 0.01          # polygons: up to rasterisation at edges
    train = read_chexpert_csv(tmp_path/'CheXpert-v1.0'/'train.csv')
    assert len(train) == 3 and set(np.unique(train[list(CHEXPERT_LABELS)].fillna(9).to_numpy())) <= {1, 0, -1, 9}
    for k in (1, 2, 3): assert (tmp_path/f'hb_annotations_test_reader{k}.json').exists()

def test_console_script_writes_jpegs(tmp_path):
    chexseg_phantom(['--n', '1', '--out', str(tmp_path), '--size', '48', '--n_valid', '1', '--n_test', '1', '--readers', '0'])
    assert (tmp_path/'CheXpert-v1.0'/'test'/'patient00001'/'study1'/'view1_frontal.jpg').exists()
    assert not (tmp_path/'hb_annotations_test_reader1.json').exists()

@pytest.mark.parametrize('argv, message', [(['--n', '-1'], '--n: must be at least 0, got -1'), (['--n', '2', '--size', '16'], 'cannot draw the anatomy')])
def test_console_script_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        chexseg_phantom(argv + ['--out', str(tmp_path)])
    assert message in capsys.readouterr().err

def test_bad_arguments():
    with pytest.raises(ValueError, match='n must be'): PhantomDataset(-3)
    with pytest.raises(ValueError, match='cannot draw the anatomy'): PhantomDataset(2, size=8)
    with pytest.raises(ValueError, match='cannot draw the anatomy'): render_batch(0, [0], 4000)
    with pytest.raises(KeyError, match='Valid labels'): PhantomConfig(prevalence={'Lung Nodule': 0.2})
    with pytest.raises(KeyError, match='No Finding'): PhantomConfig(prevalence={'No Finding': 0.2})
    with pytest.raises(ValueError, match=r'\[0, 1\]'): PhantomConfig(prevalence={'Edema': -0.1})
    with pytest.raises(ValueError, match='seed'): render_batch(-1, [0], 32)
    with pytest.raises(ValueError, match='split'): phantom_split('holdout', 3)
    with pytest.raises(ValueError, match='n_valid'): write_phantom('/nonexistent', 1, n_valid=-2)
    with pytest.raises(IndexError, match='out of range'): PhantomDataset(2, size=32)[5]
