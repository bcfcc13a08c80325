"""Train a model. ``python train.py`` runs configs/default.yaml;
``python train.py fit --config configs/<x>.yaml`` runs anything else
(``--help``, ``--print_config``, ``--model.init_args.lr=...`` as with any LightningCLI)."""

from diffuse_feat.cli import main

if __name__ == "__main__":
    main()
