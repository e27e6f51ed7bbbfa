"""Config schema: unknown or ill-typed fields, bad values, overrides, shipped config files."""

import json
import pathlib

import pytest

from jaxadv import config as config_lib
from jaxadv import data
from jaxadv.train import workdir

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"


def test_base_config_is_valid():
  config_lib.validate(config_lib.base_config())


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "optim.lr must be > 0"),
    ("attack.eps=-0.1", "attack.eps must be >= 0"),
    ("attack.steps=0", "attack.steps must be >= 1"),
    ("attack.norm=l7", "attack.norm must be one of"),
    ("model.name=vgg99", "model.name 'vgg99' is unknown"),
    ("dataset.name=imagenet", "dataset.name 'imagenet' is unknown"),
    ("objective.name=magic", "objective.name 'magic' is unknown"),
    ("optim.schedule=exp", "optim.schedule 'exp' is unknown"),
    ("batch_size=0", "batch_size must be >= 1"),
    ("optim.learning_rate=0.1", "unknown field 'optim.learning_rate'"),
    ("lr=0.1", "unknown field 'lr'"),
    ("num_epochs=ten", "num_epochs cannot be set"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("attack.eps=fast", r"attack.eps must be a number \(a decimal such as 0.03 or a fraction "
                        r"such as 8/255\), got 'fast'"),
    ("attack.eps=8/255/2", "attack.eps must be a number"),
    ("attack.eps=eps/2", "attack.eps must be a number"),
    ("attack.eps=8/0", "'8/0' divides by zero"),
    ("attack.eps=-8/255", "attack.eps must be >= 0"),
    ("seed", "not of the form field=value"),
    ("model.mean=(0.5,)", r"model.mean \(0.5,\) and model.std \(\) are set together"),
    ("model.std=(0,)", "are set together"),
    ("model.mean=('a',)", "are set together"),
])
def test_bad_overrides_are_rejected(override, message):
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config_lib.apply_overrides(config_lib.base_config(), [override]))


def test_unknown_and_ill_typed_fields_in_a_config_are_rejected():
  config = config_lib.base_config()
  config.optim.momentum_typo = 0.9
  with pytest.raises(ValueError, match="unknown field 'optim.momentum_typo'"):
    config_lib.validate(config)
  config = config_lib.base_config()
  config.dataset = config.dataset.to_dict() | {"num_train": "all"}
  with pytest.raises(ValueError, match="dataset.num_train must be a int"):
    config_lib.validate(config)


def test_overrides_parse_literals_and_follow_references():
  config = config_lib.apply_overrides(config_lib.base_config(),
                                      ["attack.eps=0.1", "optim.lr=1", "model.name=resnet18",
                                       "optim.milestones=[0.3, 0.6]"])
  assert config.attack.eps == config.eval.eps == 0.1  # the eval eps follows the training eps
  assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
  assert config.optim.milestones == (0.3, 0.6)
  assert config.model.name == "resnet18"


def test_overrides_take_fractions_for_numbers():
  config = config_lib.apply_overrides(
      config_lib.base_config(), ["attack.eps=8/255", "optim.lr=1/10", "eval.step_size=2e-3/4"])
  assert config.attack.eps == config.eval.eps == 8 / 255
  assert config.optim.lr == 0.1 and config.eval.step_size == 5e-4
  assert config_lib.parse_value("8/255") == 8 / 255  # --grid and --eps values too
  assert config_lib.parse_value("runs/mnist") == "runs/mnist"  # a path stays a string


def test_model_normalisation_overrides_the_dataset_statistics():
  config = config_lib.validate(config_lib.apply_overrides(
      config_lib.base_config(), ["model.mean=(0,)", "model.std=(0.5,)"]))
  digits = data.load("digits", "test")
  model = workdir.build_model(config, digits)
  assert tuple(model.mean) == (0.0,) and tuple(model.std) == (0.5,)
  assert tuple(workdir.build_model(config_lib.base_config(), digits).mean) == digits.mean
  with pytest.raises(ValueError, match="model.std must be > 0"):
    config_lib.validate(config_lib.apply_overrides(config, ["model.std=(0.0,)"]))
  with pytest.raises(ValueError, match="must be numbers"):
    config_lib.validate(config_lib.apply_overrides(config, ["model.std=('a',)"]))
  config = config_lib.apply_overrides(config, ["model.mean=(0, 0, 0)", "model.std=(1, 1, 1)"])
  with pytest.raises(ValueError, match="model.mean .* has 3 channels, the images of digits 1"):
    workdir.build_model(config_lib.validate(config), digits)


def test_json_round_trip():
  config = config_lib.base_config()
  assert config_lib.to_json(config_lib.from_json(config_lib.to_json(config))) == config_lib.to_json(config)


def test_json_of_an_older_schema_loads_with_defaults_but_unknown_fields_fail():
  written = json.loads(config_lib.to_json(config_lib.base_config()))
  del written["optim"]["ema_decay"]  # a run directory from before the field existed
  assert config_lib.from_json(json.dumps(written)).optim.ema_decay == 0.0
  written["optim"]["momentun"] = 0.9
  with pytest.raises(ValueError, match="unknown field 'optim.momentun'"):
    config_lib.from_json(json.dumps(written))


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_shipped_configs_are_valid(path):
  config = config_lib.validate(config_lib.load_file(str(path)))
  assert config.name == path.stem
  smoke = config_lib.validate(config_lib.load_file(f"{path}:smoke"))
  assert smoke.num_epochs <= 2


def test_missing_config_file():
  with pytest.raises(FileNotFoundError, match="not found"):
    config_lib.load_file("experiments/configs/nope.py")


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_shipped_configs_declare_their_variant_words_and_load_with_each(path):
  words = config_lib.variants(path)
  assert "smoke" in words, f"{path.name} declares no VARIANTS with its 'smoke' variant"
  for word in words:
    config_lib.validate(config_lib.load_file(f"{path}:{word}"))
    if word != "smoke":
      config_lib.validate(config_lib.load_file(f"{path}:{word},smoke"))


@pytest.mark.parametrize("variant, message", [
    ("mnist_pgd_at.py:smoke-typo", r"mnist_pgd_at.py: unknown config variant word\(s\) "
                                   r"\['smoke-typo'\] \(did you mean 'smoke'\?\)"),
    ("mnist_pgd_at.py:smoke,cpu", r"\['cpu'\]; the variant words are \['smoke'\]"),
    ("mnist_trades.py:smoke,", None),  # an empty word is no word
    ("mnist_namid.py:trades,smok", r"\['smok'\] \(did you mean 'smoke'\?\)"),
    ("mnist_seg_erm.py:no_mediate", r"mnist_seg_erm.py: unknown config variant"),
    ("mnist_seg_advamd.py:no_mediate,smoke", None),  # mnist_advamd's words
])
def test_a_misspelt_variant_is_refused_instead_of_running_the_full_job(variant, message):
  if message is None:
    config_lib.validate(config_lib.load_file(str(CONFIG_DIR / variant)))
    return
  with pytest.raises(ValueError, match=message):
    config_lib.load_file(str(CONFIG_DIR / variant))


def test_a_config_file_without_variants_gets_its_variant_unchecked(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text("from jaxadv import config as config_lib\n\n"
                  "def get_config(variant=''):\n"
                  "  config = config_lib.base_config()\n"
                  "  config.name = variant or 'mine'\n"
                  "  return config\n")
  assert config_lib.load_file(f"{path}:anything").name == "anything"
  assert config_lib.variants(path) == ()
