"""Every `blur-retrieval` command, in one package: the only modules that import click.

It sits on top of the dependency chain (commands -> benchmark -> indexer -> retrieval) and
nothing in the library imports it. `main` assembles the commands; each other module holds one
command (or a group) and turns options into library calls and library errors into exit
statuses. `blur-retrieval --help` and `<command> --help` must not import torch: a command
module imports only light modules at the top and the rest inside its command's body.

    main.py         the `blur-retrieval` group, log set-up, `-q` for every command
    options.py      option parsing shared by every command (sizes, devices, output paths)
    support.py      model load errors and `--json` errors, the same in every command
    synth.py        synth                      train.py        train
    train_dense.py  train-dense                video_set.py    video-set
    index.py        index build|add|dense|remove|info, query
    index_rerank.py the re-ranking side of the index commands (dense cache, --rerank)
    serve.py        serve                      bench.py        bench sim|index|speed (+ map)
    bench_map.py    bench map                  demo.py         demo
"""
