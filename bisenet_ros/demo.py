"""Kept so that an old command says where it went: ``python -m bisenet_ros.demo`` (the demo)
is now ``make demo``."""
if __name__ == "__main__":
    from .cli import moved_command

    moved_command("bisenet_ros.demo", "make demo")
