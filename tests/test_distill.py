"Distillation: the loss on hand-made logits, student caching, skipped initialisations and early errors."
import math
import pytest, torch
import torch.nn.functional as F
import chexseg.distill as distill
from chexseg.encoders import available_inits
from chexseg.distill import (distill_loss, train_student, teacher_logits, run_distillation, unlabeled_size,
                             chexseg_distill)
from chexseg.semi import build_segmenter, experiment_config

LN3 = math.log(3)


@pytest.mark.parametrize('s,t,expected', [
    (0., 10 * LN3, math.log(2)),                                          # q = 3/4, p = 1/2
    (10 * LN3, 10 * LN3, -(.75 * math.log(.75) + .25 * math.log(.25))),  # p = q: the entropy of q, the minimum
    (-10 * LN3, 10 * LN3, -(.75 * math.log(.25) + .25 * math.log(.75))), # p = 1/4
    (10 * LN3, 0., -(.5 * math.log(.75) + .5 * math.log(.25))),          # q = 1/2, p = 3/4
])
def test_loss_on_hand_made_logits(s, t, expected):
    assert distill_loss(torch.tensor([s]), torch.tensor([t])).item() == pytest.approx(expected, abs=1e-6)


def test_loss_averages_over_elements_and_uses_tau():
    s, t = torch.tensor([[0., 20 * LN3]]), torch.tensor([[20 * LN3, 20 * LN3]])   # tau = 20: targets 3/4
    both = (math.log(2) + -(.75 * math.log(.75) + .25 * math.log(.25))) / 2
    assert distill_loss(s, t, tau=20).item() == pytest.approx(both, abs=1e-6)
    assert distill_loss(s, t, tau=10).item() != pytest.approx(both, abs=1e-3)


def test_loss_equals_the_naive_bce_and_stays_exact_where_it_saturates():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 10, 6, 6, generator=g) * 30, torch.randn(3, 10, 6, 6, generator=g) * 30
    naive = F.binary_cross_entropy(torch.sigmoid(s / 10), torch.sigmoid(t / 10))
    assert distill_loss(s, t).item() == pytest.approx(naive.item(), rel=1e-5)
    # s/tau = -300 with target 1/2: -(1/2) log sigmoid(-300) - (1/2) log(1 - sigmoid(-300)) = 150 (+ ~0)
    assert distill_loss(torch.tensor([-3000.]), torch.tensor([0.])).item() == pytest.approx(150., rel=1e-6)


def test_gradient_moves_the_student_towards_the_teacher():
    t = torch.tensor([5., -5., 0.])
    s = torch.tensor([-3., 4., 0.], requires_grad=True)
    distill_loss(s, t).backward()
    # d loss / d s_i = (sigmoid(s_i/tau) - sigmoid(t_i/tau)) / (tau * N): negative below the teacher, positive above, 0 at it
    expected = (torch.sigmoid(s.detach() / 10) - torch.sigmoid(t / 10)) / (10 * 3)
    assert torch.allclose(s.grad, expected, atol=1e-7)
    assert s.grad[0] < 0 < s.grad[1] and s.grad[2] == 0


def test_bad_loss_inputs():
    with pytest.raises(ValueError, match='tau must be positive'): distill_loss(torch.zeros(2), torch.zeros(2), tau=-1)
    with pytest.raises(ValueError, match='differ in shape'): distill_loss(torch.zeros(2), torch.zeros(3))


def test_student_trains_and_is_cached(tmp_path, monkeypatch):
    torch.manual_seed(0)
    images = torch.rand(4, 1, 32, 32)
    targets = teacher_logits(build_segmenter(), images, device='cpu')
    model, losses = train_student(images, targets, tmp_path, steps=6, batch_size=2, lr=1e-3, device='cpu')
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert (tmp_path/'model.safetensors').exists()

    def no_training(*a, **k): raise AssertionError('a cached student was trained again')
    monkeypatch.setattr(distill, 'fit', no_training)
    again, cached_losses = train_student(images, targets, tmp_path, steps=6, batch_size=2, device='cpu')
    assert cached_losses == pytest.approx(losses)
    for k, v in model.state_dict().items(): assert torch.equal(again.state_dict()[k], v), k


def test_unknown_init_is_skipped_with_a_reason(capsys):
    use, skipped = available_inits(['random', 'imagenet21k', 'random'])
    assert use == ['random'] and list(skipped) == ['imagenet21k']
    assert 'unknown' in skipped['imagenet21k'] and 'known: random' in skipped['imagenet21k']
    assert 'skipping' in capsys.readouterr().out


@pytest.mark.parametrize('fractions', [(0.01, 0.), (-0.1,), (1.01,)])
def test_bad_fraction_fails_before_any_work(tmp_path, fractions):
    with pytest.raises(ValueError, match=r'must lie in \(0, 1\]'):
        run_distillation(experiment_config('smoke'), fractions=fractions, root=tmp_path/'runs', figures=tmp_path/'figures')
    assert list(tmp_path.iterdir()) == []


def test_no_registered_init_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match='none of the encoder initialisations'):
        run_distillation(experiment_config('smoke'), inits=('imagenet21k',), root=tmp_path/'runs', figures=tmp_path/'figures')
    assert list(tmp_path.iterdir()) == []


def test_pool_sizes():
    assert [unlabeled_size(f, 20_000) for f in (0.01, 0.1)] == [200, 2000]
    assert unlabeled_size(0.01, 24, min_unlabeled=3) == 3 and unlabeled_size(1, 24) == 24


def test_cli_checks_before_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        chexseg_distill(['--scale', 'smoke', '--fractions', '2', '--root', str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith('chexseg_distill: error: ') and 'got 2.0' in err, err
    assert list(tmp_path.iterdir()) == []


def test_empty_pool_setting_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match='min_unlabeled must be at least 1'):
        run_distillation(experiment_config('smoke'), min_unlabeled=0, root=tmp_path/'runs', figures=tmp_path/'figures')
    assert list(tmp_path.iterdir()) == []
