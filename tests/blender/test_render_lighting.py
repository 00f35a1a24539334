"""The imported lights render the head close to the fit's own SH shading.

Measured with Cycles (CPU, 50% resolution, 128 samples, no denoising) against numpy's
albedo * SH(n) from the same bundle, on the head's fully covered pixels (render_compare.py).
Stated tolerance on this synthetic bundle: relative RMS error <= 5% and mean absolute error
<= 0.02 (linear units; pixel values ~0.2-0.9). Measured: 2.6% / 0.009, of which Monte-Carlo
noise is about half (2.3% at 512 samples). The real backend's bundle: test_real_backend.py.
"""

import bpy
import render_compare

REL_RMSE_MAX = 0.05
MAE_MAX = 0.02


def _measure(result, tmp_path, tag):
    tex = next(n for n in result.material.node_tree.nodes if n.type == "TEX_IMAGE").image
    m = render_compare.measure(bpy.context.scene, result.head, tex, result.bundle.sh, str(tmp_path / tag),
                               landmarks_2d=result.bundle.landmarks_2d)
    render_compare.save_side_by_side(str(tmp_path / f"{tag}_compare.png"), m)
    print(f"\n{tag}: lights vs SH render: relative RMSE {m['rel_rmse']:.3f}, MAE {m['mae']:.4f}, "
          f"95th pct {m['p95']:.4f}, bias {m['bias']:+.4f} over {m['pixels']} head pixels "
          f"(face: {m['face']['rel_rmse']:.3f}); "
          f"normal-space fit error {result.rig.error:.3f} (closed form {result.rig.closed_form_error:.3f})")
    return m


def test_lights_match_sh_render_synthetic(empty_scene, synth_bundle_dir, tmp_path):
    from blender_flamefit.blender import importer

    result = importer.import_bundle(bpy.context, synth_bundle_dir)
    m = _measure(result, tmp_path, "synthetic")
    assert m["pixels"] > 2000
    assert m["rel_rmse"] <= REL_RMSE_MAX and m["mae"] <= MAE_MAX
