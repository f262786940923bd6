"""The LeNet-style architecture of the backdoor population, as a factory for the CLI:
``--model examples/fmnist_lenet.py:build`` (it declares its input shape and class names)."""

from agnostic_saliency.data import FASHION_MNIST_CLASSES
from agnostic_saliency.models.architectures import FmnistLeNet


def build():
    model = FmnistLeNet()
    model.input_shape = (1, 28, 28)
    model.class_names = list(FASHION_MNIST_CLASSES)
    return model
