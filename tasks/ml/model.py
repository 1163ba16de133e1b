"""The delay model: embeddings for the categorical features, an MLP over everything,
as a small deep ensemble.

`members` independently initialised networks are trained side by side on the same
batches (each with its own loss) and their probabilities averaged. On this data one
network's valid-window recall moves by about 0.02 with the seed alone; averaging members
removes most of that variance, which is what lifted the model above the tree baseline
(docs/model.md, "The model and its training"). The members are batched into single
tensors ([members, ...] weights, one `baddbmm` per layer), so five cost far less than five
trainings.

A checkpoint is a dict {"config": ModelConfig as a dict, "state_dict": tensors}, so a
model can be rebuilt from the file alone.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    cardinalities: list[int]  # per categorical feature, including the 'unknown' index 0
    n_numeric: int  # numeric features plus their missing-value flags
    # The architecture, from params.yaml's train section (no defaults: that file is the one
    # source of every tunable value).
    max_embedding_dim: int
    hidden: list[int]
    dropout: float
    members: int  # networks in the ensemble
    # Training weighs positives by pos_weight, which multiplies the learnt odds by it;
    # adding -log(pos_weight) to the logit turns them back into calibrated odds.
    logit_offset: float = 0.0

    def embedding_dims(self) -> list[int]:
        # A common rule of thumb: grow with the vocabulary, capped.
        return [min(self.max_embedding_dim, (n + 1) // 2) for n in self.cardinalities]


class MemberLinear(nn.Module):
    """One linear layer per ensemble member: [members, batch, in] -> [members, batch, out]."""

    def __init__(self, members: int, width_in: int, width_out: int) -> None:
        super().__init__()
        # nn.Linear's default initialisation, drawn independently for each member.
        bound = 1 / math.sqrt(width_in)
        self.weight = nn.Parameter(
            torch.empty(members, width_in, width_out).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(members, 1, width_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class DelayModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        k = config.members
        # Index 0 is "unknown" (unseen or rare in train): padding_idx keeps its vector at
        # zero and out of training, so an unseen value adds nothing rather than noise.
        # One table per feature holds every member's vectors side by side.
        self.embeddings = nn.ModuleList(
            nn.Embedding(n, d * k, padding_idx=0)
            for n, d in zip(config.cardinalities, config.embedding_dims(), strict=True)
        )
        width = sum(config.embedding_dims()) + config.n_numeric
        layers: list[nn.Module] = []
        for size in config.hidden:
            layers += [MemberLinear(k, width, size), nn.ReLU(), nn.Dropout(config.dropout)]
            width = size
        layers.append(MemberLinear(k, width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """codes [batch, n_categorical] int64, numeric [batch, n_numeric] ->
        logits [members, batch]: each member's logits of training (weighted), without
        the calibration offset."""
        k, batch = self.config.members, len(codes)
        embedded = [
            emb(codes[:, i]).view(batch, k, -1).transpose(0, 1)
            for i, emb in enumerate(self.embeddings)
        ]
        inputs = torch.cat([*embedded, numeric.expand(k, -1, -1)], dim=2)
        return self.mlp(inputs).squeeze(2)

    @torch.no_grad()
    def predict_proba(
        self, codes: torch.Tensor, numeric: torch.Tensor, batch: int = 65536
    ) -> torch.Tensor:
        """Calibrated probabilities of a delay (the members' mean), in batches, on the
        model's device."""
        self.eval()
        device = next(self.parameters()).device
        out = [
            torch.sigmoid(
                self(codes[i : i + batch].to(device), numeric[i : i + batch].to(device))
                + self.config.logit_offset
            )
            .mean(0)
            .cpu()
            for i in range(0, len(codes), batch)
        ]
        return torch.cat(out) if out else torch.empty(0)


def save_checkpoint(model: DelayModel, path: Path) -> None:
    from tasks.core.io import atomic_path

    # Saved to memory first: torch names the records inside the file after the file it
    # writes to, and the temporary name is random, so the same weights would give other
    # bytes (and another DVC hash) each time.
    buffer = io.BytesIO()
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict()}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_checkpoint(path: Path, device: str = "cpu") -> DelayModel:
    data: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    model = DelayModel(ModelConfig(**data["config"]))
    model.load_state_dict(data["state_dict"])
    return model.eval()


def pick_device(setting: str) -> torch.device:
    """'auto': CUDA when present, else CPU; or exactly what params ask for."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= available:
        from tasks.core.errors import StepError

        raise StepError(
            f"train.device is {setting}, but this machine has {available} CUDA device(s): "
            "use auto or cpu"
        )
    return device


def make_deterministic(seed: int, threads: int) -> None:
    """Same inputs and params -> bit-identical weights on CPU."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
