"""An architecture the package has never seen, to load as ``examples/unseen_model.py:build``.

A VGG-style network with 5x5 then 3x3 convolutions, ELU activations and no batch norm; it
declares its input shape so that ``--input-shape`` can be left out. Train it with
``python scripts/train_example.py`` (writes a plain state-dict ``.pt``).
"""

from torch import nn

CLASS_NAMES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


class VGGish(nn.Module):
    input_shape = (1, 28, 28)
    class_names = CLASS_NAMES

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 24, 5, padding=2), nn.ELU(), nn.Conv2d(24, 24, 3, padding=1), nn.ELU(), nn.MaxPool2d(2),
            nn.Conv2d(24, 48, 3, padding=1), nn.ELU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(48 * 7 * 7, 96), nn.ELU(), nn.Linear(96, 10),
        )

    def forward(self, x):
        return self.body(x)


def build() -> nn.Module:
    return VGGish()
