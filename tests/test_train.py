"The shared training loop under DistributedDataParallel: 2 gloo processes on the CPU equal one process."
import os, socket, sys
import torch, torch.multiprocessing as mp
from torch.utils.data import Dataset
from chexseg.train import closing_process_group, fit, step_indices


class Regression(Dataset):
    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g); self.y = self.x @ torch.tensor([1., -2., .5])
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return {'x': self.x[i], 'y': self.y[i]}


def mse(net, b): return ((net(b['x']).squeeze(1) - b['y'])**2).mean()


def train_once():
    torch.manual_seed(0); m = torch.nn.Linear(3, 1)
    fit(m, Regression(), mse, steps=10, batch_size=8, lr=0.1, device='cpu')
    return m.weight.detach().clone()


def _worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    with closing_process_group(): torch.save(train_once(), f'{out}.{rank}')
    # Leave without the interpreter's finalisation, where C++ teardown once aborted a rank that had done its work
    # ("terminate called without an active exception" in CI): this test is about the weights, not gloo's exit.
    sys.stdout.flush(); sys.stderr.flush(); os._exit(0)


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_ddp_two_processes_match_single(tmp_path):
    single = train_once()
    out = tmp_path/'w.pt'
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    for rank in range(2):
        torch.testing.assert_close(torch.load(f'{out}.{rank}', weights_only=True), single, rtol=1e-5, atol=1e-6)


def test_step_indices_cover_each_epoch_once():
    idx = torch.cat([step_indices(k, 9, 3, seed=1) for k in range(3)])
    assert sorted(idx.tolist()) == list(range(9))
