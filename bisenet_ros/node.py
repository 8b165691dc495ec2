"""Kept so that an old command says where it went: ``python -m bisenet_ros.node`` (the segmentation node)
is now ``segmentation_node``."""
if __name__ == "__main__":
    from .cli import moved_command

    moved_command("bisenet_ros.node", "segmentation_node")
