"""`python -m resnet_deploy.cli` runs the CLI."""

from . import main

main()
