from pathlib import Path

from indexer import settings as settings_mod


def test_precedence_flag_then_env_then_file_then_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('batch_size = 7\nmin_face_size = 33\ndetect_max_side = 800\n')
    env = {"FACEIDX_BATCH_SIZE": "5", "FACEIDX_MIN_FACE_SIZE": "44"}
    s = settings_mod.load({"batch_size": 3, "home": tmp_path / "h"}, environ=env,
                          config_file=config)
    assert s.batch_size == 3  # flag beats env and file
    assert s.min_face_size == 44  # env beats file
    assert s.detect_max_side == 800  # file beats default
    assert s.max_image_pixels == settings_mod.Settings().max_image_pixels  # default


def test_home_defaults_to_user_data_dir_and_env_overrides_it(tmp_path: Path) -> None:
    s = settings_mod.load(environ={}, config_file=tmp_path / "absent.toml")
    assert s.home == settings_mod.default_home()
    assert "faceidx" in str(s.home)
    s = settings_mod.load(environ={"FACEIDX_HOME": str(tmp_path / "x")},
                          config_file=tmp_path / "absent.toml")
    assert s.home == tmp_path / "x"
    assert s.catalog_path == tmp_path / "x" / "catalog.duckdb"
