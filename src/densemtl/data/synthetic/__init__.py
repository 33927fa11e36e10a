"""Procedural indoor scenes with exact multi-task labels (numpy only, deterministic per seed).

Each image is ray cast analytically: a closed box room (floor, ceiling, four walls) holding
spheres, oriented boxes, upright cylinders and cones and 0–2 articulated figures built from a
head sphere, a torso capsule, capsule limbs, hand spheres and foot boxes. Every pixel's ray keeps
its nearest hit, which gives depth, normals, surface/instance/class/part ids and curvature in
closed form. Albedo comes from procedural solid textures (plain, stripes, checkers, value noise)
that change colour only, never a label; shading is Lambertian under one directional light plus
ambient (no shadows), then gamma 2.2 and a little Gaussian noise.

Conventions (all exact, the tests rely on them):

* Camera frame: x right in the image, y up in the image, z towards the camera (the camera looks
  along -z). A horizontal image flip negates normals' x; rotating the image content
  counter-clockwise by θ rotates (x, y) counter-clockwise by θ. Pixel (row v, column u) is centred
  on image coordinates (u, v) and ``intrinsics = (fx, fy, cx, cy)`` with cx = (W - 1) / 2,
  cy = (H - 1) / 2, so its ray is ((u - cx) / fx, -(v - cy) / fy, -1); see
  :mod:`densemtl.data.geometry`. Visible surfaces face the camera: ⟨n, ray⟩ < 0 at every pixel.
  Under perspective that is not n_z > 0 everywhere: surfaces seen away from the image centre at
  a grazing angle have n_z < 0 (the ceiling when the camera pitches down, a side wall the camera
  yaws away from, the inner rim of an off-centre sphere), about 15 % of pixels here.
* ``depth``: metric z-depth (distance along the optical axis), about 1–9 m.
* ``semseg``: indices into :data:`SYNTHETIC_CLASSES`; class 0 is "wall". Every pixel is labelled
  (the room is closed), so no pixel carries the ignore value 255.
* ``instance`` (``int32 H×W``): room surfaces have ids 1..6 in the order of
  :data:`ROOM_SURFACES`; objects and figures have ids ≥ 7 (one id per figure); 0 is never used.
* ``edge``: for every pair of 4-neighbours with different instance ids (so wall/wall and
  wall/floor creases count, texture never does) the nearer pixel is marked (ties: the left / top
  one). Edges sit on the occluding side, one pixel thick, and every edge pixel has a 4-neighbour
  of another instance.
* ``human_parts``: 0 background, 1..6 = head, torso, upper arms, lower arms + hands, upper legs,
  lower legs + feet (the PASCAL grouping). Parts are labelled on the figures' visible pixels; an
  image with no visible figure pixel is all 255 (ignore), as for PASCAL images without persons.
* ``sal``: the visible pixels of one object or figure (non-room instance): among those covering
  at least ``SALIENT_MIN_AREA`` (2 %) of the image, the one whose mean image colour lies farthest
  from the mean colour of all other pixels (global colour contrast; version 2 marked the figures,
  a copy of their semseg mask). Never empty: a layout where no object covers 2 % is redrawn from
  the same random stream.
* extras: ``curvature`` = principal curvatures (k1 ≥ k2, 1/m, positive where the surface bends
  away from its normal: 1/r on spheres, (1/r, 0) on cylinders, (cos α / ρ, 0) on cones clipped at
  20, 0 on planes); ``reshading`` = 0.2 + 0.8·max(0, ⟨n, l⟩) for a fixed camera-frame light l;
  ``edge2d`` = Sobel magnitude of the grey image divided by its maximum 4√2; ``edge3d`` = nearer
  pixel of a 4-neighbour pair on two different primitives where depth jumps by more than 2 % and
  neither surface, extrapolated in inverse depth, continues into the other (contact lines do not
  count; room faces never occlude, so room creases never do); ``keypoints2d`` = Harris response
  (k = 0.05, σ = 1) clipped at 0 and divided by its image maximum; ``keypoints3d`` = max of
  Gaussian blobs (σ = max(1, W/64) px) at the visible room and box corners, cone apexes and
  figure joints.

Datasets: :func:`image_seed` makes image i of a dataset depend only on (seed, i), never on n;
:func:`write_cache` renders n images into a directory of stacked ``.npy`` files (atomically, in
parallel) and :class:`SyntheticScenes` serves splits of it as a torch ``Dataset``.

The package follows the pipeline: ``textures`` (albedo), ``primitives`` (ray hits), ``scene``
(sampling a room, figures, objects, camera), ``render`` (image + labels of one scene),
``cache`` (rendered datasets on disk), ``dataset`` (the torch ``Dataset`` over a cache).
"""

from densemtl.data.synthetic.cache import (
    LABEL_CHECKS,
    VERSION,
    SyntheticCacheError,
    cache_name,
    check_labels,
    load_cache,
    write_cache,
)
from densemtl.data.synthetic.dataset import ASTMT_TASKS, SyntheticScenes
from densemtl.data.synthetic.render import (
    BASE_KEYS,
    EXTRA_KEYS,
    IGNORE,
    boundary_edges,
    image_seed,
    render_scene,
)
from densemtl.data.synthetic.scene import (
    FIRST_OBJECT_INSTANCE,
    HUMAN_PART_NAMES,
    PERSON_CLASS,
    ROOM_SURFACES,
    SYNTHETIC_CLASSES,
)
from densemtl.data.synthetic.textures import Texture

__all__ = [
    "ASTMT_TASKS",
    "BASE_KEYS",
    "EXTRA_KEYS",
    "FIRST_OBJECT_INSTANCE",
    "HUMAN_PART_NAMES",
    "IGNORE",
    "LABEL_CHECKS",
    "PERSON_CLASS",
    "ROOM_SURFACES",
    "SYNTHETIC_CLASSES",
    "VERSION",
    "SyntheticCacheError",
    "SyntheticScenes",
    "Texture",
    "boundary_edges",
    "cache_name",
    "check_labels",
    "image_seed",
    "load_cache",
    "render_scene",
    "write_cache",
]
