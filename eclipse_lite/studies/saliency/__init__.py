"""Where is the sound? Localisation maps from ECLIPSE, and scores for them.

The paper (Sec. 5.1, Fig. 7 and 9; REFERENCE.md "Sound localisation") shows, but never scores,
maps made from "the similarity between audio features and visual patches": for frame ``t``, the
dot product between the final audio token ``a_t`` and each of that frame's final patch tokens,
a ``g x g`` map (``g = image_size / patch_size``), min-max normalised, cubed, normalised again,
upsampled bicubically to the frame and blended over it (0.7 image + 0.3 heat map). Here:

    maps = saliency_maps(model, frames, audio, method="dot")   # [B, T, g, g] raw
    heat = heatmaps(maps, size=frames.shape[-1])                # [B, T, H, W] in [0, 1]
    picture = overlay(frame_uint8, heat[0, 0])                  # uint8 [H, W, 3]
    score_maps(heat.flatten(0, 1), boxes)                       # {"pointing_game", "miou", "n"}

Methods (``METHODS``):
  "dot"            the paper's map: final audio token . final patch tokens, on the residual
                   stream (before ``ln_post``). Default (see "Which space" below).
  "dot_projected"  the same after CLIP's output head on both sides, ``proj(ln_post(.))``, i.e.
                   in the joint embedding space the frame CLS is trained in.
  "v2a"            V2A attention (Eq. 4): the weights with which the audio token queries the
                   frame's patches, averaged over heads, audio tokens and layers. (A2V's weights
                   are useless here: with one audio token per frame its softmax runs over a
                   single key and every weight is 1.) The weights are recomputed from each AV
                   block's inputs, captured with forward hooks; ``fusion="joint"`` uses the
                   audio rows of its joint attention.

Which space. Both "dot" variants are computed every time the benchmark is scored
(:func:`evaluate_localisation`), so the better one can be read off ``saliency_scores.json``; the
default is the paper's literal recipe ("dot") — see ``docs/benchmarks.md``. ``layers`` picks
other layers than the last (maps "from the wrong layer" are one of the things to check when a
map fails). The last layer's V2A update of the audio stream never reaches the video embedding
(the audio stream is dropped after the last layer), so its ``v2a_proj`` gets no gradient and
stays at its zero initialisation: the "final" audio token is in effect the one after the
second-to-last layer.

Scoring (the bundled benchmark knows each sound source's box):
  * pointing game: the map's maximum lies inside the ground-truth box. Ties (a flat map) are
    broken at random in expectation: the hit is the fraction of maximal pixels inside the box —
    the same rule the project uses for tied retrieval scores.
  * IoU: pixels ``>= min + threshold * (max - min)`` (threshold 0.5 by default, i.e. half the
    normalised map's range) against the box's pixel mask; a flat map switches every pixel on.
  * baselines: a centre prior (a Gaussian at the frame centre, ``sigma = 0.25`` of the side) and
    a random map (uniform noise on the same ``g x g`` grid, post-processed and upsampled exactly
    like the model's maps), plus a control per method: the same map computed with the audio of
    another frame ("<method>_shuffled_audio"). A map that merely finds the most salient object
    scores as well without its own sound; only a map that uses the sound loses here.
  * scored frames: frames where exactly one object is both on screen and sounding and it belongs
    to a ``seen_heard`` event (``kinds`` adds others, e.g. ``brief``), ``frames_per_event``
    drawn per event with the seed, scored at the model's input size; mean ± sample std over
    seeds (frame draws, random maps and, with one checkpoint per seed, training seeds). The
    frames where a second, silent object is also on screen are scored again as a subset
    ("2+ objects on screen"): there, pointing at "the object" is not enough.

Command line: ``eclipse-lite saliency --data DIR --checkpoint RUN --out OUT`` (it calls :func:`run`);
writes ``saliency_scores.json``, a PNG per video (methods x frames, boxes drawn)
and a GIF per video over its frames.

Modules:
  maps          raw maps from the model: audio token vs patch tokens, V2A weights
  heatmaps      the paper's post-processing (min-max, cube, bicubic) and the overlay
  scores        pointing game, IoU, baselines, mean ± std over seeds, the bar
  ground_truth  the scored frames (the benchmark's ground truth: data.synth.ground_truth)
  media         decoded videos, audio embeddings and maps of single frames
  files         the benchmark's videos and the audio encoder weights on disk
  pictures      a PNG and a GIF per video
  evaluate      evaluate_localisation (all of the above, over seeds) and format_scores
  command       run: models, scores and pictures of a benchmark, written to a folder
"""
from eclipse_lite.data.synth.ground_truth import load_plans, sounding_sources
from eclipse_lite.studies.saliency.command import run
from eclipse_lite.studies.saliency.evaluate import CROWDED, evaluate_localisation, format_scores
from eclipse_lite.studies.saliency.files import find_audio_encoder, find_videos, load_audio_encoder
from eclipse_lite.studies.saliency.ground_truth import VideoRecord, pick_frames
from eclipse_lite.studies.saliency.heatmaps import heatmaps, normalise_maps, overlay, upsample_maps
from eclipse_lite.studies.saliency.maps import METHODS, compute_maps, saliency_maps, trace_layers
from eclipse_lite.studies.saliency.scores import (
    BASELINES,
    beats_baselines,
    box_masks,
    centre_prior_maps,
    map_ious,
    pointing_hits,
    random_maps,
    score_maps,
    summarise_seeds,
)

__all__ = ["METHODS", "BASELINES", "CROWDED", "saliency_maps", "compute_maps", "trace_layers",
           "normalise_maps", "upsample_maps", "heatmaps", "overlay", "box_masks",
           "pointing_hits", "map_ious", "score_maps", "centre_prior_maps", "random_maps",
           "summarise_seeds", "beats_baselines", "load_plans", "sounding_sources", "pick_frames",
           "VideoRecord", "evaluate_localisation", "find_videos", "find_audio_encoder",
           "load_audio_encoder", "format_scores", "run"]
