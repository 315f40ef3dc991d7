"""``openmind view``: the QC browser's web application (Starlette, served by uvicorn).

The page (``static/``: plain HTML, CSS and JavaScript, no build step, nothing from a CDN) asks
the JSON API below for the list and for one image; the planes are PNGs drawn here, by the code
that draws the shards' previews (:mod:`openmind_data.planes`).

- ``GET /api/facets``: the values each filter can take, the ratings file, the dataset's name.
- ``GET /api/images?modality=&dataset=&license=&split=&flag=&min_iqs=&max_iqs=&rated=&sort=
  &order=&offset=&limit=``: the rows kept, a page of them.
- ``GET /api/next?...&after=ID``: the next unrated image of that selection, worst IQS first.
- ``GET /api/images/ID``: one image's fields, metrics, provenance, source, rating, grid and
  display window (its voxels are read here: one row group of one shard).
- ``GET /api/images/ID/planes/PLANE/INDEX.png?low=&high=&masks=anatomy,brain``: a plane.
- ``POST /api/images/ID/rating`` with ``{"verdict": "exclude"}`` or ``{"rating": 4}``.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from threading import Lock
from typing import Any

from openmind_data.errors import ConfigError
from openmind_data.nifti import decode_nifti
from openmind_data.planes import MASK_COLOURS, PLANES, Volume, draw_plane
from openmind_data.view.catalog import Catalog
from openmind_data.view.store import Store

__all__ = ["VOLUMES_KEPT", "Volumes", "create_app"]

STATIC = Path(__file__).with_name("static")
#: Decoded volumes kept in memory (the image being rated and the last few).
VOLUMES_KEPT = 3
_MASKS = {"anat_mask": "anatomy", "anon_mask": "anonymization", "brain_mask": "brain"}
_PAGE = 200


class Volumes:
    """Decoded volumes by image id, the last :data:`VOLUMES_KEPT` kept."""

    def __init__(self, store: Store, catalog: Catalog) -> None:
        self.store = store
        self.catalog = catalog
        self._kept: OrderedDict[str, Volume] = OrderedDict()
        self._lock = Lock()

    def get(self, image_id: str) -> Volume:
        with self._lock:
            if image_id in self._kept:
                self._kept.move_to_end(image_id)
                return self._kept[image_id]
        row = self.catalog.row(image_id)
        cells = self.store.cells(self.store.locate(row), ["image", *_MASKS])
        image = decode_nifti(cells["image"]["bytes"])
        data = image.get_fdata(dtype="float32")
        masks = {
            name: decode_nifti(cells[column]["bytes"]).get_fdata(dtype="float32") > 0
            for column, name in _MASKS.items()
            if cells.get(column) and cells[column].get("bytes")
        }
        volume = Volume.from_arrays(data[..., 0] if data.ndim > 3 else data, image.affine, masks)
        with self._lock:
            self._kept[image_id] = volume
            while len(self._kept) > VOLUMES_KEPT:
                self._kept.popitem(last=False)
        return volume


def create_app(store: Store, catalog: Catalog) -> Any:
    """The Starlette application over one dataset."""
    from starlette.applications import Starlette  # noqa: PLC0415 (only `openmind view`)
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import FileResponse, JSONResponse, Response  # noqa: PLC0415
    from starlette.routing import Mount, Route  # noqa: PLC0415
    from starlette.staticfiles import StaticFiles  # noqa: PLC0415

    volumes = Volumes(store, catalog)

    def query_of(request: Request) -> dict[str, str]:
        return {k: v for k, v in request.query_params.items() if v != ""}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def facets(request: Request) -> Response:
        return JSONResponse(
            {
                "dataset": store.name,
                "images": len(catalog.rows),
                "rated": len(catalog.ratings.ratings),
                "ratings_file": str(catalog.ratings.path),
                "facets": catalog.facets,
                "planes": list(PLANES),
                "masks": {name: _hex(rgb) for name, rgb in MASK_COLOURS.items()},
            }
        )

    async def images(request: Request) -> Response:
        query = query_of(request)
        rows = catalog.select(query)
        offset = int(query.get("offset", 0))
        limit = min(int(query.get("limit", _PAGE)), 1000)
        page = [catalog.summary(row) for row in rows[offset : offset + limit]]
        return JSONResponse({"total": len(rows), "offset": offset, "rows": page})

    async def next_unrated(request: Request) -> Response:
        query = query_of(request)
        after = query.pop("after", None)
        return JSONResponse({"image_id": catalog.next_unrated(query, after)})

    async def image(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        details = catalog.details(image_id)
        volume = volumes.get(image_id)
        low, high = volume.window()
        details["grid"] = {
            "shape": list(volume.shape),
            "spacing": list(volume.spacing),
            "centre": list(volume.centre()),
            "window": [low, high],
            "range": [float(volume.data.min()), float(volume.data.max())],
            "masks": sorted(volume.masks),
        }
        return JSONResponse(details)

    async def plane(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        name = request.path_params["plane"]
        if name not in PLANES:
            raise ConfigError(f"plane {name!r}: one of {', '.join(PLANES)}")
        volume = volumes.get(image_id)
        window = volume.window()
        low = float(request.query_params.get("low", window[0]))
        high = float(request.query_params.get("high", window[1]))
        shown = [m for m in request.query_params.get("masks", "").split(",") if m]
        picture = draw_plane(
            volume,
            name,
            int(request.path_params["index"]),
            window=(low, high),
            masks=shown,
            mm_per_pixel=min(volume.spacing),
        )
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    async def rate(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        catalog.row(image_id)  # a KeyError for an unknown image
        body = await request.json()
        entry = catalog.ratings.rate(
            image_id, verdict=body.get("verdict"), rating=body.get("rating")
        )
        return JSONResponse(entry.to_dict())

    async def bad_request(request: Request, error: Exception) -> Response:
        return JSONResponse({"error": str(error)}, status_code=400)

    async def not_found(request: Request, error: Exception) -> Response:
        return JSONResponse({"error": f"no image {error}"}, status_code=404)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/facets", facets),
            Route("/api/images", images),
            Route("/api/next", next_unrated),
            Route("/api/images/{image_id}", image),
            Route("/api/images/{image_id}/planes/{plane}/{index:int}.png", plane),
            Route("/api/images/{image_id}/rating", rate, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={ConfigError: bad_request, ValueError: bad_request, KeyError: not_found},
    )


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{value:02x}" for value in rgb)
