"""harx stage one: decode videos, embed frames with a pretrained CNN, write the feature cache."""
