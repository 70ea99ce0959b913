"""Student architectures: one registry (`STUDENTS`), builders registered by name, and `build_model`.

Importing this package registers every builder. Each model lists the module paths worth tapping for
feature distillation in `feature_layers` (shallow to deep) and names the classifier's input in
`embedding_layer`; the classifier itself is always the module `fc`.
"""

from distill.models import cnn, mlp, mobilenetv2, resnet, shufflenetv2, vgg, wrn  # noqa: F401  (registers the builders)
from distill.models.build import MAX_PARAMETERS, build_model, count_parameters, embedding_layer, feature_layers
from distill.models.registry import STUDENTS

__all__ = ["MAX_PARAMETERS", "STUDENTS", "build_model", "count_parameters", "embedding_layer", "feature_layers"]
