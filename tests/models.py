"""Small, seeded PyTorch models for tests (built by hand: torchvision is not available)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv2d layers of several kernel sizes, then an MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.conv3 = nn.Conv2d(32, 24, 5)
        self.conv4 = nn.Conv2d(24, 40, 1)
        self.fc1 = nn.Linear(40 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv4(x))
        x = nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


class MLP(nn.Module):
    """A plain multilayer perceptron with one wide and one tall layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 200)
        self.fc2 = nn.Linear(200, 120)
        self.fc3 = nn.Linear(120, 30)
        self.out = nn.Linear(30, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.out(torch.relu(self.fc3(x)))


def heavy_tailed_(model: nn.Module, seed: int) -> nn.Module:
    """Give every weight heavy-tailed, correlated structure so fits are non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                flat = p.view(p.shape[0], -1)
                u = torch.randn(flat.shape[0], 3, generator=gen, dtype=flat.dtype)
                v = torch.randn(3, flat.shape[1], generator=gen, dtype=flat.dtype)
                noise = torch.distributions.StudentT(2.5).sample(flat.shape)
                flat.copy_(0.05 * noise + 0.3 * (u @ v) / flat.shape[1] ** 0.5)
    return model


def build(name: str, seed: int = 0) -> nn.Module:
    """A model from this module by class name, seeded."""
    torch.manual_seed(seed)
    model = {"SmallCNN": SmallCNN, "MLP": MLP}[name]()
    return heavy_tailed_(model, seed)


class _SelfAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)


class _DenseNorm(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out)


class _Attention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.self = _SelfAttention(d)
        self.output = _DenseNorm(d, d)


class _Intermediate(nn.Module):
    def __init__(self, d: int, ff: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d, ff)


class _Block(nn.Module):
    def __init__(self, d: int, ff: int) -> None:
        super().__init__()
        self.attention = _Attention(d)
        self.intermediate = _Intermediate(d, ff)
        self.output = _DenseNorm(ff, d)


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, d: int, positions: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d)
        self.position_embeddings = nn.Embedding(positions, d)
        self.token_type_embeddings = nn.Embedding(2, d)
        self.LayerNorm = nn.LayerNorm(d)
        self.register_buffer("position_ids", torch.arange(positions).unsqueeze(0))


class _Encoder(nn.Module):
    def __init__(self, layers: int, d: int, ff: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Block(d, ff) for _ in range(layers))


class _Pooler(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d, d)


class BertLike(nn.Module):
    """The module tree of a BERT encoder (all-MiniLM-L6-v2's shapes by default), no forward."""

    def __init__(
        self,
        vocab: int = 30522,
        d: int = 384,
        ff: int = 1536,
        layers: int = 6,
        positions: int = 512,
    ) -> None:
        super().__init__()
        self.embeddings = _Embeddings(vocab, d, positions)
        self.encoder = _Encoder(layers, d, ff)
        self.pooler = _Pooler(d)
