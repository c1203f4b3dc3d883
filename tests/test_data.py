"Tests of chexseg.data: CheXpert/CheXlocalize formats, letterboxing, datasets and their errors."
import json

import numpy as np
import pandas as pd
import pytest
import torch
from pycocotools import mask as mask_util

from chexseg.core import CHEXPERT_LABELS, PATHOLOGIES
from chexseg.data import (CheXpertDataset, DataFormatError, FolderDataset, Letterbox, annotation_to_masks, image_id,
                          letterbox, mask_to_rle, masks_to_segmentation, polygons_to_mask, read_annotation_json,
                          read_chexpert_csv, read_image, read_segmentation_json, rle_pixel_totals, rle_to_mask,
                          segmentation_to_masks, uncertainty_targets, unletterbox, write_annotation_json,
                          write_chexpert_csv, write_folder_dataset, write_segmentation_json)

ID = 'patient7_study1_view1_frontal'


@pytest.fixture
def rng(): return np.random.default_rng(0)


def random_masks(rng, n=10, h=23, w=31):
    "Masks of varied density, including empty and full ones."
    ms = [(rng.random((h, w)) < p).astype(np.uint8) for p in rng.random(n - 2)]
    return np.stack(ms + [np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8)])


def blob(h, w):
    "An off-centre elliptical blob covering a good part of an h x w image."
    yy, xx = np.mgrid[:h, :w]
    return (((yy - 0.45 * h) / (0.3 * h))**2 + ((xx - 0.55 * w) / (0.25 * w))**2 < 1).astype(np.uint8)


# --- image ids --------------------------------------------------------------------------------------------------

def test_image_id_rule():
    assert image_id('CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg') == 'patient64541_study1_view1_frontal'
    assert image_id('/x/CheXpert-v1.0/train/patient00001/study12/view2_lateral.jpg') == 'patient00001_study12_view2_lateral'
    with pytest.raises(ValueError, match='view1_frontal.jpg'): image_id('view1_frontal.jpg')


# --- RLE and segmentation JSON ------------------------------------------------------------------------------------

@pytest.mark.filterwarnings('ignore::DeprecationWarning')   # pycocotools' decode under numpy 2
def test_rle_round_trip_matches_pycocotools(rng):
    for m in random_masks(rng):
        rle = mask_to_rle(m)
        ref = mask_util.encode(np.asfortranarray(m))
        assert isinstance(rle['counts'], str) and rle['counts'] == ref['counts'].decode()
        assert rle['size'] == [23, 31]
        np.testing.assert_array_equal(rle_to_mask(rle), m)
        np.testing.assert_array_equal(rle_to_mask(rle), mask_util.decode(ref))


def test_rle_pixel_totals(rng):
    ms = [random_masks(rng, 4, h, w) for h, w in [(1, 1), (5, 300), (64, 17)]]
    counts = [mask_to_rle(m)['counts'] for stack in ms for m in stack]
    np.testing.assert_array_equal(rle_pixel_totals(counts), [m.size for stack in ms for m in stack])
    np.testing.assert_array_equal(rle_pixel_totals(['', '0P', 'a b']), [0, -1, -1])


def test_segmentation_json_round_trip(tmp_path, rng):
    masks = [random_masks(rng) for _ in range(3)]
    seg = {f'patient{i}_study1_view1_frontal': masks_to_segmentation(m) for i, m in enumerate(masks)}
    write_segmentation_json(seg, tmp_path/'seg.json')
    back = read_segmentation_json(tmp_path/'seg.json')
    assert back == seg
    for k in seg: assert list(back[k]) == list(PATHOLOGIES)
    np.testing.assert_array_equal(segmentation_to_masks(back['patient1_study1_view1_frontal']), masks[1])   # the masks themselves come back


def test_write_segmentation_fills_missing_pathologies(tmp_path):
    write_segmentation_json({ID: {'Edema': mask_to_rle(np.ones((4, 5)))}}, tmp_path/'p.json')
    raw = json.loads((tmp_path/'p.json').read_text())
    assert list(raw[ID]) == list(PATHOLOGIES)
    assert segmentation_to_masks(raw[ID]).sum((1, 2)).tolist() == [0, 0, 0, 0, 20, 0, 0, 0, 0, 0]


# --- polygons ---------------------------------------------------------------------------------------------------

def test_polygon_square_filled_with_outline():
    m = polygons_to_mask([[[2, 3], [6, 3], [6, 7], [2, 7]]], 10, 12)
    assert m.dtype == np.uint8 and m.sum() == 25               # x 2..6, y 3..7 inclusive
    assert m[3:8, 2:7].all()


def test_annotation_json_to_masks(tmp_path):
    ann = {ID: {'img_size': [10, 12], 'Cardiomegaly': [[[2, 3], [6, 3], [6, 7], [2, 7]]], 'Edema': [[[0, 0], [1, 0], [1, 1]]]}}
    write_annotation_json(ann, tmp_path/'ann.json')
    back = read_annotation_json(tmp_path/'ann.json')
    masks = annotation_to_masks(back[ID])
    assert masks.shape == (10, 10, 12) and masks[PATHOLOGIES.index('Cardiomegaly')].sum() == 25
    assert masks[PATHOLOGIES.index('Edema')].sum() == 3


# --- CSV and uncertainty ----------------------------------------------------------------------------------------

def chexpert_csv(path, rows):
    "Write a CheXpert-style CSV of (Path, Frontal/Lateral, {label: value}) rows."
    recs = [{'Path': p, 'Sex': 'Female', 'Frontal/Lateral': v, **{c: lab.get(c, '') for c in CHEXPERT_LABELS}} for p, v, lab in rows]
    pd.DataFrame(recs).to_csv(path, index=False)


def test_csv_round_trip_and_frontal_filter(tmp_path):
    chexpert_csv(tmp_path/'valid.csv', [('CheXpert-v1.0/valid/patient1/study1/view1_frontal.jpg', 'Frontal', {'Edema': -1, 'Cardiomegaly': 1}),
                                         ('CheXpert-v1.0/valid/patient1/study1/view2_lateral.jpg', 'Lateral', {'Edema': 0})])
    df = read_chexpert_csv(tmp_path/'valid.csv')
    assert list(df.columns) == ['Path', *CHEXPERT_LABELS] and len(df) == 1
    assert len(read_chexpert_csv(tmp_path/'valid.csv', frontal_only=False)) == 2
    assert df['Edema'].iloc[0] == -1 and np.isnan(df['No Finding'].iloc[0])
    write_chexpert_csv(df, tmp_path/'out.csv')
    pd.testing.assert_frame_equal(read_chexpert_csv(tmp_path/'out.csv'), df)


def test_uncertainty_policies():
    row = np.array([[1, 0, -1, np.nan, -1]], dtype=float)
    ones, w1 = uncertainty_targets(row, 'U-Ones')
    zeros, w0 = uncertainty_targets(row, 'U-Zeros')
    ign, wi = uncertainty_targets(row, 'U-Ignore')
    assert ones.dtype == w1.dtype == np.float32
    assert ones.tolist() == [[1, 0, 1, 0, 1]] and w1.tolist() == [[1, 1, 1, 1, 1]]
    assert zeros.tolist() == [[1, 0, 0, 0, 0]] and w0.tolist() == [[1, 1, 1, 1, 1]]
    assert ign.tolist() == [[1, 0, 0, 0, 0]] and wi.tolist() == [[1, 1, 0, 1, 0]]
    with pytest.raises(ValueError, match='U-Ignore'): uncertainty_targets(row, 'U-MultiClass')
    with pytest.raises(ValueError, match='1, 0, -1 or NaN'): uncertainty_targets(np.array([[2.0]]), 'U-Ones')


# --- letterbox --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('h,w', [(300, 420), (420, 300), (97, 61), (64, 64)])
def test_letterbox_then_unletterbox_returns_mask(h, w):
    m = blob(h, w)
    small, box = letterbox(m, 128, mask=True)
    assert small.shape == (128, 128) and small.dtype == np.uint8 and box.size == 128
    back = unletterbox(small, box)
    assert back.shape == (h, w) and back.dtype == np.uint8
    assert (back == m).mean() >= 0.99
    edge = m ^ np.roll(m, 1, 0) | m ^ np.roll(m, 1, 1) | m ^ np.roll(m, -1, 0) | m ^ np.roll(m, -1, 1)
    assert (back == m)[~dilate(edge.astype(bool), 3)].all()      # disagreements only near the blob's edge


def dilate(a, r):
    "Boolean dilation by a (2r+1)^2 square."
    out = a.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1): out |= np.roll(np.roll(a, dy, 0), dx, 1)
    return out


def test_letterbox_geometry_and_json(tmp_path):
    img = np.ones((50, 100), np.float32)
    sq, box = letterbox(img, 64)
    assert box == Letterbox(50, 100, 64, 16, 0, 32, 64)
    assert sq[:16].max() == 0 and sq[48:].max() == 0 and sq[16:48].min() > 0.99
    box.save(tmp_path/'box.json')
    assert Letterbox.load(tmp_path/'box.json') == box
    stack = np.stack([blob(50, 100)] * 10)
    small, _ = letterbox(stack, 64, mask=True)
    assert unletterbox(small, box).shape == (10, 50, 100)
    assert unletterbox(small.astype(np.float32), box).dtype == np.float32
    np.testing.assert_array_equal(unletterbox(torch.from_numpy(small), box).numpy(), unletterbox(small, box))


# --- datasets ---------------------------------------------------------------------------------------------------

def png(a, path):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)


@pytest.fixture
def chexpert_root(tmp_path, rng):
    "Two frontal PNG images (40x48) of one patient, a CSV, and a GT segmentation JSON for the first."
    rows = []
    for s in (1, 2):
        rel = f'CheXpert-v1.0/valid/patient7/study{s}/view1_frontal.png'
        png(rng.integers(0, 256, (40, 48)), tmp_path/rel)
        rows.append((rel, 'Frontal', {'Cardiomegaly': 1, 'Edema': -1}))
    chexpert_csv(tmp_path/'valid.csv', rows)
    masks = np.zeros((10, 40, 48), np.uint8); masks[1, 10:30, 5:40] = 1
    write_segmentation_json({ID: masks_to_segmentation(masks)}, tmp_path/'gt.json')
    return tmp_path


def check_item(item, size):
    assert set(item) == {'id', 'image', 'labels', 'label_weights', 'mask', 'has_mask'}
    assert isinstance(item['id'], str) and isinstance(item['has_mask'], bool)
    assert item['image'].shape == (1, size, size) and item['image'].dtype == torch.float32
    assert 0 <= item['image'].min() and item['image'].max() <= 1
    assert item['labels'].shape == item['label_weights'].shape == (14,)
    assert item['labels'].dtype == item['label_weights'].dtype == torch.float32
    assert item['mask'].shape == (10, size, size) and item['mask'].dtype == torch.uint8


def test_chexpert_dataset_item_contract(chexpert_root):
    ds = CheXpertDataset(chexpert_root, chexpert_root/'valid.csv', chexpert_root/'gt.json', size=32, policy='U-Ignore')
    a, b = ds[0], ds[1]
    for it in (a, b): check_item(it, 32)
    assert a['id'] == ID and a['has_mask'] and a['mask'][1].sum() > 0 and a['mask'].sum() == a['mask'][1].sum()
    assert not b['has_mask'] and b['mask'].sum() == 0
    i_card, i_edema = CHEXPERT_LABELS.index('Cardiomegaly'), CHEXPERT_LABELS.index('Edema')
    assert a['labels'][i_card] == 1 and a['label_weights'][i_edema] == 0
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch['image'].shape == (2, 1, 32, 32) and batch['has_mask'].tolist() == [True, False]
    empty = CheXpertDataset(chexpert_root, chexpert_root/'valid.csv', chexpert_root/'gt.json', size=32, missing_masks_empty=True)
    assert empty[1]['has_mask']


def test_folder_dataset_item_contract(tmp_path, rng):
    masks = np.zeros((10, 50, 30), np.uint8); masks[PATHOLOGIES.index('Pleural Effusion'), 30:45, 5:25] = 1
    labels = pd.DataFrame({'Lung Opacity': [1.0, np.nan]}, index=['a', 'b'])
    write_folder_dataset(tmp_path, {'a': rng.random((50, 30)), 'b': rng.random((20, 40))}, labels, {'a': masks})
    ds = FolderDataset(tmp_path, size=24)
    a, b = ds[0], ds[1]
    for it in (a, b): check_item(it, 24)
    assert (a['id'], a['has_mask'], b['has_mask']) == ('a', True, False)
    assert a['mask'].sum((1, 2)).nonzero().flatten().tolist() == [PATHOLOGIES.index('Pleural Effusion')]
    i = CHEXPERT_LABELS.index('Lung Opacity')
    assert a['label_weights'].nonzero().flatten().tolist() == [i] and a['labels'][i] == 1 and b['labels'][i] == 0
    assert ds.box(0) == Letterbox.fit(50, 30, 24)


# --- bad input: each error names the file and the image id --------------------------------------------------------

def test_missing_image_file(chexpert_root):
    (chexpert_root/'CheXpert-v1.0/valid/patient7/study2/view1_frontal.png').unlink()
    ds = CheXpertDataset(chexpert_root, chexpert_root/'valid.csv', size=32)
    with pytest.raises(FileNotFoundError, match=r"view1_frontal.png, image 'patient7_study2_view1_frontal': image file not found"):
        ds[1]


@pytest.mark.parametrize('content', [b'not an image at all', b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR truncated'])
def test_unreadable_image(chexpert_root, content):
    (chexpert_root/'CheXpert-v1.0/valid/patient7/study2/view1_frontal.png').write_bytes(content)
    with pytest.raises(DataFormatError, match=r"view1_frontal.png, image 'patient7_study2_view1_frontal': unreadable image"):
        CheXpertDataset(chexpert_root, chexpert_root/'valid.csv', size=32)[1]


def test_truncated_jpeg(tmp_path, rng):
    from PIL import Image
    Image.fromarray(rng.integers(0, 256, (64, 64)).astype(np.uint8)).save(tmp_path/'x.jpg', quality=90)
    data = (tmp_path/'x.jpg').read_bytes(); (tmp_path/'x.jpg').write_bytes(data[:len(data) // 2])
    with pytest.raises(DataFormatError, match=r"x.jpg, image 'p1': unreadable image"): read_image(tmp_path/'x.jpg', 'p1')


@pytest.mark.parametrize('reader', [read_segmentation_json, read_annotation_json])
def test_malformed_json(tmp_path, reader):
    (tmp_path/'broken.json').write_text('{"patient1_study1_view1_frontal": {"Edema": ')
    with pytest.raises(ValueError, match='Malformed JSON in .*broken.json'): reader(tmp_path/'broken.json')


def test_rle_size_disagrees_with_image(chexpert_root):
    write_segmentation_json({ID: masks_to_segmentation(np.zeros((10, 48, 40), np.uint8))}, chexpert_root/'wrong.json')
    ds = CheXpertDataset(chexpert_root, chexpert_root/'valid.csv', chexpert_root/'wrong.json', size=32)
    with pytest.raises(DataFormatError, match=rf"wrong.json, image '{ID}': mask size \[48, 40\] disagrees with the image .*view1_frontal.png"):
        ds[0]


def test_rle_size_disagrees_with_other_pathologies(tmp_path):
    entry = masks_to_segmentation(np.zeros((10, 8, 9), np.uint8))
    entry['Edema'] = mask_to_rle(np.zeros((9, 8)))
    (tmp_path/'seg.json').write_text(json.dumps({ID: entry}))
    with pytest.raises(DataFormatError, match=rf"seg.json, image '{ID}': the pathologies' RLE sizes disagree.*Edema \[9, 8\]"):
        read_segmentation_json(tmp_path/'seg.json')


def test_rle_counts_disagree_with_size(tmp_path):
    entry = masks_to_segmentation(np.zeros((10, 8, 9), np.uint8))
    entry['Edema'] = {'size': [8, 9], 'counts': mask_to_rle(np.ones((8, 8)))['counts']}
    (tmp_path/'seg.json').write_text(json.dumps({ID: entry}))
    with pytest.raises(DataFormatError, match=rf"seg.json, image '{ID}', 'Edema': RLE counts cover 64 pixels, but a 8x9 mask has 72"):
        read_segmentation_json(tmp_path/'seg.json')


def test_unknown_pathology_key(tmp_path):
    entry = masks_to_segmentation(np.zeros((10, 8, 9), np.uint8))
    entry['Pneumonia'] = entry.pop('Edema')
    (tmp_path/'seg.json').write_text(json.dumps({ID: entry}))
    with pytest.raises(DataFormatError, match=rf"seg.json, image '{ID}': Unknown pathology 'Pneumonia'. Valid localization"):
        read_segmentation_json(tmp_path/'seg.json')
    (tmp_path/'ann.json').write_text(json.dumps({ID: {'img_size': [8, 9], 'Nodule': []}}))
    with pytest.raises(DataFormatError, match=rf"ann.json, image '{ID}': Unknown pathology 'Nodule'"):
        read_annotation_json(tmp_path/'ann.json')


def test_unknown_pathology_mask_png_in_folder(tmp_path, rng):
    write_folder_dataset(tmp_path, {'a': rng.random((20, 20))}, masks={'a': np.ones((10, 20, 20), np.uint8)})
    png(np.ones((20, 20)), tmp_path/'masks/a/Nodule.png')
    with pytest.raises(DataFormatError, match=r"Nodule.png, image 'a': Unknown pathology 'Nodule'"): FolderDataset(tmp_path, size=16)[0]


def test_bad_csv_value(tmp_path):
    chexpert_csv(tmp_path/'labels.csv', [('CheXpert-v1.0/valid/patient1/study1/view1_frontal.jpg', 'Frontal', {'Edema': 'maybe'})])
    with pytest.raises(DataFormatError, match=r"labels.csv, line 2 \(Path '.*view1_frontal.jpg'\): label 'Edema' is 'maybe'"):
        read_chexpert_csv(tmp_path/'labels.csv')
    pd.DataFrame({'Path': ['x.jpg']}).to_csv(tmp_path/'short.csv', index=False)
    with pytest.raises(DataFormatError, match=r"short.csv: missing column\(s\)"): read_chexpert_csv(tmp_path/'short.csv')
