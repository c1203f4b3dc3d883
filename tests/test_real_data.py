"The whole method on real-data folders (CheXpert + CheXlocalize, or your own films in the folder format), written from phantom films."
import json, shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest
from chexseg.core import refusal
from chexseg.data import CHEXPERT_LABELS, FolderDataset, image_id, masks_to_segmentation, read_chexpert_csv, read_segmentation_json, write_chexpert_csv, write_folder_dataset
from chexseg.metrics import iou_table
from chexseg.phantom import phantom_split, write_phantom
from chexseg.paper import STAGES, chexseg_paper, regenerate
from chexseg.radiologists import compare_radiologists
from chexseg.segment import chexseg_segment
from chexseg.semi import chexseg_train_segmenter, experiment_config, run_experiment
from chexseg.sweep import chexseg_sweep

SIZE = 64


@pytest.fixture(scope='module')
def chexpert_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('chexpert')
    write_phantom(root, n_train=30, n_valid=14, n_test=8, size=SIZE, fmt='jpg')
    return root


@pytest.fixture(scope='module')
def sweep_on_folder(chexpert_folder, tmp_path_factory):
    "A p-sweep of two runs (CheXseg p = 0.9 and weakly supervised p = 0) on the folder, as the drivers lay it out."
    runs = tmp_path_factory.mktemp('runs')
    for p in (0.9, 0.0):
        cfg = experiment_config('smoke', 'cpu', p=p, data_root=str(chexpert_folder), n_expert=8, n_val=6, n_test=8, steps=4)
        run_experiment(cfg, runs/'cache', runs/'sweep'/f"p{p}", 'cpu')
    return runs/'sweep'


def test_runs_score_the_folders_test_images(chexpert_folder, sweep_on_folder):
    test_ids = [image_id(p) for p in read_chexpert_csv(chexpert_folder/'CheXpert-v1.0'/'test.csv').Path]
    gt = json.loads((chexpert_folder/'gt_segmentations_test.json').read_text())
    for run in ('p0.9', 'p0.0'):
        per_image = pd.read_csv(sweep_on_folder/run/'per_image_iou.csv', index_col=['trial', 'cxr_id'])
        assert sorted(per_image.index.get_level_values('cxr_id')) == sorted(i for i in test_ids if i in gt)
        results = pd.read_csv(sweep_on_folder/run/'results.csv')
        assert np.isfinite(results.loc[results.pathology == 'mean', 'miou']).all()
        settings = json.loads((sweep_on_folder/run/'run.json').read_text())['settings']
        assert settings['data_root'] == str(chexpert_folder) and settings['size'] == SIZE


def test_radiologist_comparison_reads_the_human_benchmark(chexpert_folder, sweep_on_folder):
    out = compare_radiologists(sweep_dir=sweep_on_folder, n_boot=20)
    readers = sorted(chexpert_folder.glob('hb_annotations_test*.json'))
    assert out['meta']['readers'] == dict(ground_truth=str(chexpert_folder/'gt_segmentations_test.json'), readers=list(map(str, readers)))
    assert out['n_readers'] == len(readers) > 0
    assert out['meta']['chexseg']['p'] == 0.9 and out['meta']['weak']['p'] == 0.0


def test_segmenting_the_test_films_gives_the_runs_own_scores(chexpert_folder, sweep_on_folder, tmp_path):
    """chexseg_segment with a run's trial-0 segmenter on the folder's test films, scored against the folder's ground truth
    as chexseg_eval scores, gives that run's own per-image IoU (the phantom's films are square at the run's size, so
    letterboxing and putting the masks back change nothing)."""
    run = sweep_on_folder/'p0.9'
    chexseg_segment(['--run', str(run), '--films', str(chexpert_folder/'CheXpert-v1.0'/'test.csv'), '--out', str(tmp_path/'pred.json'),
                     '--device', 'cpu'])
    pred = read_segmentation_json(tmp_path/'pred.json')
    assert sorted(pred) == sorted(image_id(p) for p in read_chexpert_csv(chexpert_folder/'CheXpert-v1.0'/'test.csv').Path)
    table = iou_table(read_segmentation_json(chexpert_folder/'gt_segmentations_test.json'), pred)
    own = pd.read_csv(run/'per_image_iou.csv', index_col=['trial', 'cxr_id']).loc[0]
    pd.testing.assert_frame_equal(table.loc[own.index], own, check_names=False, atol=1e-6)


def lay_out_as_downloaded(src: Path, dest: Path) -> Path:
    """The phantom folder `src` copied to `dest` as the downloads lay the real files out: CheXpert's small download
    (`CheXpert-v1.0-small/train.csv`), CheXlocalize's `CheXpert/` (`val_labels.csv`, `test_labels.csv`, paths relative
    to it: `val/...`, `test/...`) and `CheXlocalize/` (the JSONs)."""
    for split, folder, csv, prefix in (('train', 'CheXpert-v1.0-small', 'train.csv', 'CheXpert-v1.0-small/train'),
                                       ('valid', 'CheXpert', 'val_labels.csv', 'val'), ('test', 'CheXpert', 'test_labels.csv', 'test')):
        table = read_chexpert_csv(src/'CheXpert-v1.0'/f'{split}.csv')
        table['Path'] = [p.replace(f'CheXpert-v1.0/{split}', prefix, 1) for p in table.Path]
        write_chexpert_csv(table, dest/folder/csv)
        shutil.copytree(src/'CheXpert-v1.0'/split, dest/folder/prefix.split('/')[-1] if folder == 'CheXpert' else dest/prefix)
    (dest/'CheXlocalize').mkdir()
    for f in src.glob('*.json'):
        if f.name != 'phantom.json': shutil.copy(f, dest/'CheXlocalize')
    return dest


def test_runs_read_the_folder_as_the_downloads_lay_it_out(chexpert_folder, sweep_on_folder, tmp_path):
    "The same films laid out as CheXpert and CheXlocalize come give the same runs, and the radiologists are found in CheXlocalize/."
    aimi = lay_out_as_downloaded(chexpert_folder, tmp_path/'chexlocalize')
    assert not (aimi/'CheXpert-v1.0').exists() and (aimi/'CheXpert'/'test'/'patient00001'/'study1'/'view1_frontal.jpg').exists()
    for p in (0.9, 0.0):
        cfg = experiment_config('smoke', 'cpu', p=p, data_root=str(aimi), n_expert=8, n_val=6, n_test=8, steps=4)
        run_experiment(cfg, tmp_path/'cache', tmp_path/'sweep'/f"p{p}", 'cpu')
        for name in ('per_image_iou.csv', 'results.csv'):
            pd.testing.assert_frame_equal(pd.read_csv(tmp_path/'sweep'/f"p{p}"/name), pd.read_csv(sweep_on_folder/f"p{p}"/name))
    out = compare_radiologists(sweep_dir=tmp_path/'sweep', n_boot=20)
    readers = sorted((aimi/'CheXlocalize').glob('hb_annotations_test*.json'))
    assert out['meta']['readers'] == dict(ground_truth=str(aimi/'CheXlocalize'/'gt_segmentations_test.json'), readers=list(map(str, readers)))
    assert out['n_readers'] == len(readers) > 0


def test_folder_too_small_for_the_split_names_the_file(chexpert_folder, tmp_path):
    cfg = experiment_config('smoke', 'cpu', data_root=str(chexpert_folder), n_expert=10, n_val=6)
    with pytest.raises(ValueError, match=r'valid\.csv has 14 frontal images; the split needs rows 10 to 16'):
        run_experiment(cfg, tmp_path)


@pytest.mark.parametrize('main', [chexseg_sweep, chexseg_paper])
def test_a_driver_names_a_folder_too_small_before_any_work(chexpert_folder, tmp_path, monkeypatch, main):
    monkeypatch.chdir(tmp_path)
    err = refusal(main, ['--scale', 'smoke', '--data_root', str(chexpert_folder), '--set', 'n_expert=10', 'n_val=6'])
    assert err.startswith(f'{main.__name__}: error: ') and 'valid.csv lists 14 frontal films, but n_expert + n_val = 10 + 6 = 16 need them' in err, err
    assert list(tmp_path.iterdir()) == []


def test_whole_paper_on_the_folder_goes_apart_from_the_phantoms(chexpert_folder, tmp_path):
    "chexseg_paper --data_root --set: every stage reads the folder with the sizes set, and its outputs go to figures/<scale>-<folder name>/."
    summary = regenerate('smoke', figures=tmp_path/'figures', root=tmp_path/'runs', ps=[0, 0.9], sources=['cam'],
                         data_root=chexpert_folder, settings=dict(n_val=4))          # chexseg_paper --set n_val=4
    name = f'smoke-{chexpert_folder.name}'
    assert summary == tmp_path/'figures'/name/'summary.md' and not (tmp_path/'figures'/'smoke').exists()
    meta = json.loads((tmp_path/'figures'/name/'paper.json').read_text())
    assert {k: v['status'] for k, v in meta['stages'].items()} == {k: 'ok' for k in STAGES}
    for stage in ('sweep', 'distill', 'encoders'):
        settings = json.loads((tmp_path/'figures'/name/f'{stage}.json').read_text())['settings']
        assert settings['data_root'] == str(chexpert_folder) and settings['n_val'] == 4, stage
    readers = json.loads((tmp_path/'figures'/name/'figure5.json').read_text())['readers']
    assert readers['ground_truth'] == str(chexpert_folder/'gt_segmentations_test.json')
    assert sorted((tmp_path/'runs'/'sweep'/name).glob('*/results.csv')) and not (tmp_path/'runs'/'sweep'/'smoke').exists()
    text = summary.read_text()
    assert text.startswith(f'# CheXseg reproduced on the data in {chexpert_folder.name}/ (smoke scale)') and 'The phantom is not' not in text


@pytest.mark.parametrize('pair, message', [('n_val=3.5', "'n_val=3.5' is not KEY=N"), ('p=0.5', "is not KEY=N"), ('lr=1', "not ['lr']")])
def test_paper_command_line_refuses_a_bad_size(tmp_path, capsys, pair, message):
    with pytest.raises(SystemExit):
        chexseg_paper(['--scale', 'smoke', '--stages', '--figures', str(tmp_path), '--set', pair])
    assert message in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_train_segmenter_command_on_the_folder(chexpert_folder, tmp_path, capsys):
    "The one-trial command on the folder, with sizes that fit it only with --n_val (10 + the scale's 6 > its 14 validation films)."
    chexseg_train_segmenter(['--scale', 'smoke', '--data_root', str(chexpert_folder), '--n_expert', '10', '--n_val', '4', '--root', str(tmp_path)])
    weights = capsys.readouterr().out.strip().splitlines()[-1]
    assert weights.endswith('model.safetensors') and Path(weights).exists() and Path(weights).is_relative_to(tmp_path)


@pytest.fixture(scope='module')
def own_folder(tmp_path_factory):
    "A folder of 'your own films' (the folder format): 22 with masks and 30 without, interleaved in labels.csv."
    root = tmp_path_factory.mktemp('own')
    masked, unmasked = phantom_split('valid', 22, SIZE), phantom_split('train', 30, SIZE)
    with_masks = [masked[k] for k in range(22)]
    items = with_masks + [unmasked[k] for k in range(30)]
    items = [items[k] for k in np.random.default_rng(0).permutation(len(items))]
    labels = pd.DataFrame([it['labels'].numpy() for it in items], index=[it['id'] for it in items], columns=CHEXPERT_LABELS)
    def own_shape(a): return a[..., :, 8:56].repeat(2, -2).repeat(2, -1)     # films of 128 x 96 px: runs at 64 px letterbox them
    write_folder_dataset(root, {it['id']: own_shape(it['image'][0].numpy()) for it in items}, labels,
                         {it['id']: own_shape(it['mask'].numpy()) for it in with_masks})
    ids = {it['id'] for it in with_masks}
    return root, [it['id'] for it in items if it['id'] in ids]


def test_chexseg_on_a_folder_of_own_films(own_folder, tmp_path):
    "The films with masks give the expert, validation and test sets in labels.csv order; the test set is what is scored."
    root, masked_ids = own_folder
    cfg = experiment_config('smoke', 'cpu', p=0.9, data_root=str(root), n_expert=8, n_val=6, n_test=8, steps=4)
    run_experiment(cfg, tmp_path/'cache', tmp_path/'run', 'cpu')
    per_image = pd.read_csv(tmp_path/'run'/'per_image_iou.csv', index_col=['trial', 'cxr_id'])
    assert list(per_image.index.get_level_values('cxr_id')) == masked_ids[14:22]
    results = pd.read_csv(tmp_path/'run'/'results.csv')
    assert np.isfinite(results.loc[results.pathology == 'mean', 'miou']).all()
    # scored as CheXlocalize scores: the run's masks back at each film's own 128 x 96 px against its own masks, which is
    # what chexseg_segment on the films and chexseg_eval against the masks give
    chexseg_segment(['--run', str(tmp_path/'run'), '--films', str(root/'images'), '--out', str(tmp_path/'pred.json'), '--device', 'cpu'])
    pred = read_segmentation_json(tmp_path/'pred.json')
    assert {tuple(s['size']) for m in pred.values() for s in m.values()} == {(128, 96)}
    films, empty = FolderDataset(root), np.zeros((10, 128, 96), np.uint8)     # a mask folder without a file: no finding
    gt = {i: masks_to_segmentation(m if (m := films.native_masks(k)) is not None else empty) for k, i in enumerate(films.ids) if i in masked_ids[14:22]}
    own = per_image.loc[0]
    pd.testing.assert_frame_equal(iou_table(gt, pred).loc[own.index], own, check_names=False, atol=1e-6)


def test_sweep_command_with_a_relative_data_root(chexpert_folder, tmp_path, monkeypatch):
    "A data folder named relative to where the command runs reaches the 04_semi kernels (which run in nbs/) as that folder."
    monkeypatch.chdir(chexpert_folder.parent)
    chexseg_sweep(['--scale', 'smoke', '--ps', '0.9', '--sources', 'cam', '--data_root', chexpert_folder.name,
                   '--root', str(tmp_path/'runs'), '--figures', str(tmp_path/'figures')])
    settings = json.loads((tmp_path/'figures'/f'smoke-{chexpert_folder.name}'/'sweep.json').read_text())['settings']
    assert settings['data_root'] == str(chexpert_folder.resolve())


def test_paper_on_own_films_skips_the_radiologists(own_folder, tmp_path):
    "A folder of your own films has no human benchmark: the driver skips the radiologist comparison and says why."
    root, _ = own_folder
    summary = regenerate('smoke', stages=['radiologists'], figures=tmp_path/'figures', root=tmp_path/'runs', data_root=root)
    status = json.loads((summary.parent/'paper.json').read_text())['stages']['radiologists']['status']
    assert status.startswith(f'skipped: {root} holds no human-benchmark file') and status in summary.read_text()
    assert not (summary.parent/'figure5.json').exists()
