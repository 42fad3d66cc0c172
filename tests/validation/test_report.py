

def test_importing_medsynth_leaves_the_plotting_backend_alone():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import medsynth.validation.compare_report, "
            "medsynth.training.figures, medsynth.validation.validate; print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "svg", result.stderr
