"""`python -m tina_edge ...` runs the same command line as `tina-edge ...`."""

from .cli.main import main

if __name__ == "__main__":
    main(prog_name="tina-edge")
