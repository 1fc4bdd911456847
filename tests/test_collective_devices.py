"""Every tensor the trainer hands to a torch.distributed collective lives on the trainer's
device. NCCL serves CUDA tensors only: a CPU tensor there fails with "No backend type
associated with device type cpu", which gloo (the CPU tests' backend) never shows. So the
collectives are wrapped and every tensor argument is checked, in a real one-process group
(gloo here; NCCL plus gloo when the GPU suite runs this on a CUDA device)."""
import socket

import pytest
import torch
import torch.distributed as dist

import siri.train.trainer
from siri import Trainer, load_config
from siri.train.distributed import DistContext, process_group_backend

COLLECTIVES = ("all_reduce", "all_gather_object", "all_gather", "all_gather_into_tensor", "reduce_scatter",
               "reduce_scatter_tensor", "broadcast", "barrier", "all_to_all")


def tensors_in(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)


@pytest.fixture
def one_process_group():
    use_cuda = torch.cuda.is_available() and siri.has_cuda_kernels()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(use_cuda), init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    yield DistContext(0, 1, 0, True, 120.0, device)
    dist.destroy_process_group()


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_every_collective_tensor_is_on_the_trainer_device(workspace, tmp_path, monkeypatch, one_process_group,
                                                          parallelism):
    calls = []

    def wrap(name, real):
        def checked(*args, **kwargs):
            calls.append((name, [t.device for t in tensors_in(list(args) + list(kwargs.values()))]))
            return real(*args, **kwargs)
        return checked

    for name in COLLECTIVES:
        if hasattr(dist, name):
            monkeypatch.setattr(dist, name, wrap(name, getattr(dist, name)))
    monkeypatch.setattr(siri.train.trainer, "init_distributed", lambda use_cuda, timeout_s: one_process_group)
    cfg = load_config(workspace / "config.yaml", [f"trainer.run_dir={tmp_path}", "trainer.steps=2",
                                                  "trainer.save_every=1", "trainer.save_rollouts=false",
                                                  f"trainer.parallelism={parallelism}"])
    trainer = Trainer(cfg)
    trainer.fit()
    device = trainer.device
    assert device == one_process_group.device
    names = {name for name, _ in calls}
    # the trainer's own collectives ran: token counts, metric sums and object gathers
    assert {"all_reduce", "all_gather_object"} <= names, names
    devices = [(name, d) for name, ds in calls for d in ds]
    assert sum(name == "all_reduce" for name, _ in devices) >= 4
    wrong = [(name, str(d)) for name, d in devices if d != device]
    assert not wrong, f"collectives got tensors off the trainer's device {device}: {wrong[:5]}"
