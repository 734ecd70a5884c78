"""recsys.threads: thread counts from arguments and the environment, and clear errors for bad values."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recsys.errors import UserError
from recsys.threads import (
    FAISS_THREADS_ENV_VAR,
    TORCH_THREADS_ENV_VAR,
    ThreadSettingError,
    available_cores,
    configure_faiss_threads,
    configure_torch_threads,
    single_threaded,
    single_threaded_blas,
    threads_from_environment,
)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, None),
        ({FAISS_THREADS_ENV_VAR: "3"}, 3),
        ({FAISS_THREADS_ENV_VAR: " 2 ", "OMP_NUM_THREADS": "5"}, 2),  # ours first
        ({FAISS_THREADS_ENV_VAR: "", "OMP_NUM_THREADS": "4,2"}, 4),  # nested levels: the first is ours
    ],
)
def test_threads_from_environment(monkeypatch, environment: dict, expected: int | None) -> None:
    for name in (FAISS_THREADS_ENV_VAR, "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert threads_from_environment(FAISS_THREADS_ENV_VAR, "OMP_NUM_THREADS") == expected


@pytest.mark.parametrize("value", ["many", "0", "-1", "1.5", ",2"])
def test_a_bad_environment_value_is_a_clear_user_error(monkeypatch, value: str) -> None:
    monkeypatch.setenv(TORCH_THREADS_ENV_VAR, value)
    with pytest.raises(
        ThreadSettingError, match=f"{TORCH_THREADS_ENV_VAR}=.* must be a positive integer"
    ) as raised:
        threads_from_environment(TORCH_THREADS_ENV_VAR)
    assert isinstance(raised.value, UserError) and isinstance(raised.value, ValueError)
    with pytest.raises(ThreadSettingError, match=TORCH_THREADS_ENV_VAR):
        configure_torch_threads()


def test_faiss_threads_come_from_the_environment(monkeypatch) -> None:
    import faiss

    previous = faiss.omp_get_max_threads()
    try:
        monkeypatch.setenv(FAISS_THREADS_ENV_VAR, "1")
        assert configure_faiss_threads() == 1 and faiss.omp_get_max_threads() == 1
        monkeypatch.setenv(FAISS_THREADS_ENV_VAR, "many")
        with pytest.raises(ValueError, match="RECSYS_FAISS_THREADS"):
            configure_faiss_threads()
        with pytest.raises(ValueError, match="positive integer"):
            configure_faiss_threads(0)
    finally:
        configure_faiss_threads(previous)


def test_torch_threads_default_to_two_capped_at_the_cores(monkeypatch) -> None:
    import torch

    previous = torch.get_num_threads()
    try:
        monkeypatch.delenv(TORCH_THREADS_ENV_VAR, raising=False)
        assert configure_torch_threads() == min(2, available_cores()) == torch.get_num_threads()
        monkeypatch.setenv(TORCH_THREADS_ENV_VAR, "1")
        assert configure_torch_threads() == 1 == torch.get_num_threads()
        with pytest.raises(ThreadSettingError, match="positive integer"):
            configure_torch_threads(True)
    finally:
        torch.set_num_threads(previous)


def test_single_threaded_blas_limits_blas_inside_the_block_only() -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    with single_threaded_blas():
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before


def test_single_threaded_pins_blas_and_torch_inside_the_block_only(monkeypatch) -> None:
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    monkeypatch.setenv(TORCH_THREADS_ENV_VAR, "2")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with threadpool_limits(2, "blas"):
            with single_threaded():
                assert blas_threads() and all(n == 1 for n in blas_threads())
                assert torch.get_num_threads() == 1
                assert configure_torch_threads() == 1 == torch.get_num_threads()  # the environment waits
            assert all(n == 2 for n in blas_threads()) and torch.get_num_threads() == 2
            assert configure_torch_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_importing_the_module_is_cheap() -> None:
    code = "import sys, recsys.threads; print(sorted({'faiss', 'torch', 'threadpoolctl'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
