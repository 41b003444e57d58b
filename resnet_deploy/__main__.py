"""`python -m resnet_deploy` runs the CLI."""

from .cli import main

main()
