"""The load-builtin role: a built-in set written as Npz reads back as the same records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ppml_runtime.__main__ import discover_roles, main
from ppml_runtime.contract import BUILTIN_DATASET_SIZES, DataConfig
from ppml_runtime.training.data import build_dataset, load_builtin, load_volume


def test_the_role_is_found_by_its_command_line_name():
    assert "load-builtin" in discover_roles()


def test_digits_written_as_npz_read_back_as_a_volume_unchanged(tmp_path, capsys):
    dest = tmp_path / "digits.npz"
    assert main(["load-builtin", "--name", "Digits", "--dest", str(dest)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"path": str(dest), "records": 1797, "features": 64, "classes": 10}
    builtin = load_builtin("Digits")
    volume = load_volume(str(dest), "Npz", "label")
    assert volume.features.dtype == np.float32 and volume.labels.dtype == np.int64
    assert np.array_equal(volume.features, builtin.features)
    assert np.array_equal(volume.labels, builtin.labels)
    # Nothing but the file is left beside it (the temporary file was renamed over it).
    assert [p.name for p in tmp_path.iterdir()] == ["digits.npz"]


def test_the_volume_splits_into_the_test_records_evaluate_model_uses(tmp_path):
    """A job on the written file holds out the records evaluate-model --builtin measures on."""
    dest = tmp_path / "digits.npz"
    assert main(["load-builtin", "--name", "Digits", "--dest", str(dest)]) == 0
    common = {"numRecords": 1437, "testFraction": "0.2", "splitSeed": 0}
    from_volume = build_dataset(
        DataConfig.model_validate(
            {"source": "Volume", "volume": {"path": str(dest), "format": "Npz"}, **common}
        )
    )
    from_builtin = build_dataset(
        DataConfig.model_validate({"source": "Builtin", "builtin": {"name": "Digits"}, **common})
    )
    assert np.array_equal(from_volume.x_test, from_builtin.x_test)
    assert np.array_equal(from_volume.y_test, from_builtin.y_test)


def test_a_rerun_replaces_the_file_whole(tmp_path):
    dest = tmp_path / "records.npz"
    dest.write_bytes(b"not an npz file")
    assert main(["load-builtin", "--name", "Iris", "--dest", str(dest)]) == 0
    assert load_volume(str(dest), "Npz", "label").features.shape[0] == BUILTIN_DATASET_SIZES["Iris"]


def test_a_missing_directory_fails_with_exit_code_1_and_writes_nothing(tmp_path, caplog):
    dest = tmp_path / "absent" / "digits.npz"
    assert main(["load-builtin", "--name", "Digits", "--dest", str(dest)]) == 1
    assert "Failed to write Digits" in caplog.text
    assert not (tmp_path / "absent").exists()


def test_an_unknown_data_set_is_refused_by_the_command_line(tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["load-builtin", "--name", "Cifar10", "--dest", str(tmp_path / "x.npz")])
    assert err.value.code == 2
