"""Kept so that an old command says where it went: ``python -m bisenet_ros.synthetic`` (the synthetic street-scene dataset writer)
is now ``python -m bisenet_ros.tools.synthetic``."""
if __name__ == "__main__":
    from .cli import moved_command

    moved_command("bisenet_ros.synthetic", "python -m bisenet_ros.tools.synthetic")
