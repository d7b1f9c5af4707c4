"""One process of the distributed NT-Xent test (tests/test_objectives.py), kept light to import:
torch.multiprocessing.spawn re-imports the module that holds the worker in every child."""
import torch
import torch.distributed as dist

from zoo.losses import nt_xent

B = 3


def run(rank, world, init_file, out):
    """Each process: the full-batch loss (no gather) and its own slice's gathered loss + gradients."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(world * B, 5, generator=g), torch.randn(world * B, 5, generator=g)
    f1, f2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    full = nt_xent(f1, f2, 0.2, gather_distributed=False)
    full.backward()
    sl = slice(rank * B, (rank + 1) * B)
    l1, l2 = z1[sl].clone().requires_grad_(), z2[sl].clone().requires_grad_()
    local = nt_xent(l1, l2, 0.2)
    local.backward()
    torch.save(dict(local=local.detach(), full=full.detach(), g1=l1.grad, g2=l2.grad,
                    f1=f1.grad[sl], f2=f2.grad[sl]), f"{out}/{rank}.pt")
    dist.destroy_process_group()
