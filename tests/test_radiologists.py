"Radiologist comparison (issue 7): gap reduction with a known answer and its paired CI, reader IoU, table alignment."
import numpy as np
import pandas as pd
import pytest

from chexseg.core import PATHOLOGIES
from chexseg.metrics import ci_frame, bootstrap_replicates
from chexseg.radiologists import (_reduction, align_tables, compare_radiologists, gap_reduction, miou_replicates,
                                  read_per_image_iou, reader_iou_masks, split_readers)


def frame(values, ids=None):
    ids = ids if ids is not None else [f'img{k}' for k in range(len(values))]
    return pd.DataFrame(values, index=pd.Index(ids, name='cxr_id'), columns=list(PATHOLOGIES))


def tables(n=400, share=0.6, noise=0.05, seed=0):
    "Readers, CheXseg and weak tables where CheXseg closes `share` of the gap per image, plus zero-mean noise."
    rng = np.random.default_rng(seed)
    r, w = rng.uniform(.4, .8, (n, 10)), rng.uniform(0, .3, (n, 10))
    c = w + share * (r - w) + rng.normal(0, noise, (n, 10))
    return frame(r), frame(c), frame(w)


def test_exact_known_answer():
    r, _, w = tables(50)
    g = gap_reduction(r, w + 0.75 * (r - w), w, n=200)
    assert list(g.index) == [*PATHOLOGIES, 'mean']
    np.testing.assert_allclose(g[['estimate', 'lower', 'upper']].to_numpy(), 0.75, atol=1e-9)
    np.testing.assert_allclose(g.gap_chexseg, 0.25 * g.gap_weak, atol=1e-12)


def test_noisy_known_answer_inside_ci_and_paired():
    r, c, w = tables()
    g = gap_reduction(r, c, w, n=1000, seed=1)
    assert g.loc['mean', 'lower'] <= 0.6 <= g.loc['mean', 'upper']
    assert abs(g.loc['mean', 'estimate'] - 0.6) < 0.01 and (g.estimate - 0.6).abs().max() < 0.03
    assert ((g.lower <= g.estimate) & (g.estimate <= g.upper)).all()
    # the same images resampled in all three tables: far narrower than resampling each table on its own
    unpaired = ci_frame(g.estimate, _reduction(*(bootstrap_replicates(t, 1000, s) for t, s in ((r, 1), (c, 2), (w, 3)))), 0.95)
    paired_width, unpaired_width = (g.upper - g.lower).mean(), (unpaired.upper - unpaired.lower).mean()
    assert paired_width < unpaired_width / 2, (paired_width, unpaired_width)


def test_ci_coverage():
    "Over 40 independent data sets the 95% CI of the mean gap reduction holds the true 0.6 about 95% of the time."
    hits = []
    for k in range(40):
        g = gap_reduction(*tables(200, seed=100 + k), n=400, seed=k).loc['mean']
        hits.append(g.lower <= 0.6 <= g.upper)
    assert 34 <= sum(hits) <= 40, sum(hits)


def test_seed_and_row_order():
    r, c, w = tables(100)
    a = gap_reduction(r, c, w, n=300, seed=5)
    pd.testing.assert_frame_equal(a, gap_reduction(r, c, w, n=300, seed=5))
    pd.testing.assert_frame_equal(a, gap_reduction(r, c.iloc[::-1], w.sample(frac=1, random_state=0), n=300, seed=5))


def test_weak_already_at_radiologists():
    r, c, _ = tables(60)
    g = gap_reduction(r, c, r + 0.01, n=100)
    assert g.estimate.isna().all() and g.lower.isna().all()
    assert g.note.str.startswith('undefined').all()
    assert (g.gap_weak < 0).all()


def test_pathology_unscored_by_a_model_is_left_out_everywhere():
    r, c, w = tables(60)
    w['Edema'] = np.nan
    g = gap_reduction(r, c, w, n=100)
    assert np.isnan(g.loc['Edema', 'estimate']) and g.loc['Edema', 'note'] == 'not scored by every table'
    rest = [p for p in PATHOLOGIES if p != 'Edema']
    expected = (c[rest].mean().mean() - w[rest].mean().mean()) / (r[rest].mean().mean() - w[rest].mean().mean())
    assert g.loc['mean', 'estimate'] == pytest.approx(expected)


def test_reader_iou_on_hand_made_masks():
    truth = np.zeros((2, 10, 6, 6), np.uint8)
    truth[0, 3, :3, :] = 1                          # 18 pixels of Airspace Opacity on image x
    truth[1, 8, :, :2] = 1                          # 12 pixels of Pleural Effusion on image y
    readers = np.zeros((2, 3, 10, 6, 6), np.uint8)
    readers[0, 0, 3, :3, :] = 1                     # reader 1: exact
    readers[0, 1, 3, :2, :] = 1                     # reader 2: 12 of the 18 -> 2/3
    readers[0, 2, 3, 1:4, :] = 1                    # reader 3: 12 shared, union 24 -> 1/2
    readers[1, 0, 8, :, :3] = 1                     # reader 1 on y: 12 / 18
    readers[1, 1, 0, :1, :1] = 1                    # reader 2 marks a false positive elsewhere: undefined
    t = reader_iou_masks(truth, readers, ['x', 'y'])
    assert t.index.names == ['reader', 'cxr_id'] and len(t) == 6
    np.testing.assert_allclose(t.xs('x', level='cxr_id')['Airspace Opacity'], [1, 2 / 3, 1 / 2])
    assert t.loc[(1, 'y'), 'Pleural Effusion'] == pytest.approx(2 / 3)
    assert t.xs('y', level='cxr_id')['Pleural Effusion'].iloc[1:].isna().all()
    assert t.drop(columns=['Airspace Opacity', 'Pleural Effusion']).isna().all().all()
    bench, _ = miou_replicates(list(split_readers(t).values()), n=10)      # the average reader
    assert bench['Airspace Opacity'] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert bench['Pleural Effusion'] == pytest.approx(2 / 3)               # only reader 1 scored it


def test_misaligned_ids_name_them():
    r, c, w = tables(5)
    with pytest.raises(ValueError, match=r"chexseg has no IoU for 2 of the radiologists' 5 images, e\.g\. \['img3', 'img4'\]"):
        gap_reduction(r, c.iloc[:3], w)
    with pytest.raises(ValueError, match=r"weak scores 1 images the radiologists have no row for, e\.g\. \['extra'\]"):
        align_tables(r, weak=pd.concat([w, frame(np.full((1, 10), .1), ['extra'])]))
    unscored = pd.concat([w, frame(np.full((1, 10), np.nan), ['extra'])])
    pd.testing.assert_frame_equal(align_tables(r, weak=unscored)['weak'], w)


def test_compare_from_two_csvs(tmp_path):
    r, c, w = tables(40)
    readers = pd.concat({1: r, 2: r * 0.9}, names=['reader', 'cxr_id'])
    for name, t in (('chexseg', c), ('weak', w)):
        (tmp_path/name).mkdir()
        pd.concat({0: t, 1: t}, names=['trial', 'cxr_id']).to_csv(tmp_path/name/'per_image_iou.csv')
    out = compare_radiologists(chexseg_csv=tmp_path/'chexseg'/'per_image_iou.csv', weak_csv=tmp_path/'weak'/'per_image_iou.csv',
                               readers=readers, out=tmp_path/'fig', n_boot=100)
    expected = gap_reduction(readers, c, w, n=100)
    assert out['miou'].loc['mean', ('radiologists', 'estimate')] == pytest.approx(0.95 * r.mean().mean())
    pd.testing.assert_frame_equal(out['gap_reduction'], expected)
    for name in ('figure5.png', 'figure5.svg', 'figure5_table.csv', 'figure5_table.md', 'figure5.json'):
        assert (tmp_path/'fig'/name).exists(), name
    with pytest.raises(ValueError, match='give the reader table'):
        compare_radiologists(chexseg_csv=tmp_path/'chexseg'/'per_image_iou.csv', weak_csv=tmp_path/'weak'/'per_image_iou.csv')
    bad = read_per_image_iou(tmp_path/'weak'/'per_image_iou.csv').rename(index={'img0': 'other'})
    bad.to_csv(tmp_path/'bad.csv')
    with pytest.raises(ValueError, match=r"weak has no IoU for 1 .* e\.g\. \['img0'\]"):
        compare_radiologists(chexseg_csv=tmp_path/'chexseg'/'per_image_iou.csv', weak_csv=tmp_path/'bad.csv', readers=readers, n_boot=10)
