"""Every study file in studies/ validates, and the SILO paper's setups carry the published
settings (docs/design.md, "SILO, exactly")."""

from __future__ import annotations

import pytest

from oracle.cli import main
from oracle.study import load_study
from tests._repo import REPO

STUDIES_DIR = REPO / "studies"
STUDIES = sorted(STUDIES_DIR.glob("*.yaml"))
PAPER = [
    "resnet20_cifar10", "vgg19_cifar10", "densenet40_cifar100", "mobilenetv2_cifar100_lap",
    "vit_cifar10", "resnet50_imagenet", "resnet20_cifar10_adam", "resnet20_cifar10_rmsprop",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Every dataset's files as `validate` looks for them (it checks, never loads): tiny
    CIFAR files in their real format, the ImageNet folders."""
    from silo.data.imagenet import IMAGENET_FOLDER
    from silo.data.tiny_imagenet import TINY_FOLDER
    from tests._synthetic_data import write_random_cifar

    root = tmp_path_factory.mktemp("data")
    for name in ("cifar10", "cifar100"):
        write_random_cifar(root, name, n_train=20, n_test=10)
    for folder in (TINY_FOLDER, IMAGENET_FOLDER):
        (root / folder).mkdir()
    return root


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_study_file_validates(path, capsys, data_root, monkeypatch):
    monkeypatch.setenv("SILO_DATA_ROOT", str(data_root))
    study = load_study(path)
    assert study.name == path.stem  # results/<name>/ is named after the file
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"# study {study.name}, resolved")


def test_the_paper_setups_are_all_there():
    assert {p.stem for p in STUDIES} >= set(PAPER)


@pytest.mark.parametrize("name", PAPER)
def test_paper_setups_share_the_published_protocol(name):
    study = load_study(STUDIES_DIR / f"{name}.yaml")
    assert study.pruning.rate == 0.2 and len(study.seeds) == 5
    assert study.task.shape.name == "warmup_step" and study.task.shape.gamma == 0.1
    assert study.arms.oracle is not None and study.arms.silo is not None
    names = [b.name for b in study.arms.baselines]
    assert "lr_rewinding" in names and "lr_warmup" in names
    silo = study.arms.silo
    # The grid brackets SILO's whole range (offset at the start, offset + alpha saturated).
    assert min(study.grid) < silo.offset and silo.offset + silo.alpha < max(study.grid)


def test_published_resnet20_and_vgg19_settings():
    r = load_study(STUDIES_DIR / "resnet20_cifar10.yaml")
    assert (r.task.model, r.task.data.name, r.task.batch_size, r.task.epochs) == ("resnet20", "cifar10", 64, 50)
    assert (r.arms.silo.offset, r.arms.silo.alpha, r.arms.silo.beta, r.arms.silo.delay) == (0.03, 0.04, 5, 1)
    assert (r.task.shape.warmup, r.task.shape.milestones) == (20000, ("25ep", "32ep"))
    o = r.task.optimizer
    assert (o.name, o.momentum, o.weight_decay) == ("sgd", 0.9, 5e-4)
    v = load_study(STUDIES_DIR / "vgg19_cifar10.yaml")
    assert (v.task.model, v.task.epochs, v.task.batch_size) == ("vgg19_bn", 160, 64)
    assert (v.arms.silo.offset, v.arms.silo.alpha, v.arms.silo.beta, v.arms.silo.delay) == (0.04, 0.06, 5, 1)
    assert (v.task.shape.warmup, v.task.shape.milestones) == (10000, ("80ep", "120ep"))


def test_variants_differ_from_the_main_study_only_where_they_say():
    main_task = load_study(STUDIES_DIR / "resnet20_cifar10.yaml").task
    for variant, optimizer in (("adam", "adam"), ("rmsprop", "rmsprop")):
        task = load_study(STUDIES_DIR / f"resnet20_cifar10_{variant}.yaml").task
        assert task.optimizer.name == optimizer
        assert task.model_copy(update={"optimizer": main_task.optimizer}) == main_task
    gradient = load_study(STUDIES_DIR / "resnet20_cifar10_gradient.yaml").task
    assert gradient.pruning.strategy == "global_gradient"
    assert gradient.model_copy(update={"pruning": main_task.pruning}) == main_task
    assert load_study(STUDIES_DIR / "mobilenetv2_cifar100_lap.yaml").task.pruning.strategy == "lookahead"
