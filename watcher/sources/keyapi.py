"""KeyAPI (api.keyapi.ai): everything watcher knows about this upstream.

Its base URL, ``Authorization: Bearer`` auth, the envelope (``code`` 0 is success, any other
is a status even inside an HTTP 200; ``message``; a top-level ``requestId``), credits (2 per
request, whatever the outcome, unless the body reports ``meta.creditsCharged``), and its one
watch type, ``top_products``: category aggregates, page-numbered, 20 rows a page at most.
Parsing is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from watcher.param import Param
from watcher.sources.specs import ProviderSpec, SourceSpec, charged_credits, present, text_at

if TYPE_CHECKING:
    from watcher.models import Product
    from watcher.sources.normalise import ParsedPage

# The parser imports ``normalise`` (and ``models``) when first called, not with this module:
# the config loader reads the facts below, and ``watcher check`` stays as quick as it was.

NAME = "keyapi"
BASE_URL = "https://api.keyapi.ai"
PRICE = 2  # credits per request, documented
PAGE_SIZE = 20  # KeyAPI's maximum ``limit``

_CATEGORY_KEYS = ("third_ecom_category", "second_ecom_category", "first_ecom_category")


def credits(status: int | None, body: Any) -> int:
    """``meta.creditsCharged`` when the body reports a sane one, else the documented price
    (KeyAPI charges every request, failed or not)."""
    charged = charged_credits(body)
    return PRICE if charged is None else charged


def body_status(body: Any) -> int | None:
    """The body ``code``: 0 is success; a non-zero int (or digit string) is a status."""
    code = body.get("code") if isinstance(body, Mapping) else None
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int) or code == 0:
        return None
    return code


def _product(row: Mapping[str, Any]) -> Product:
    """KeyAPI rows are category aggregates: identity is the deepest category present."""
    from watcher.models import Product
    from watcher.sources import normalise as n

    title = n.text_field(row, "url_title")
    categories = [n.id_field(n.sub_object(row, key), "id") for key in _CATEGORY_KEYS]
    product_id = next((cid for cid in categories if cid), title)
    if product_id is None:
        raise n.Unusable("has no category id and no url_title")
    return Product(id=product_id, title=title, image_url=n.text_field(row, "cover_url"))


def parse_keyapi_page(raw: Any) -> ParsedPage:
    """``GET /v1/tiktok/insights/products``; a body ``code`` ≠ 0 is the client's job.

    The next page is ``pagination.page + 1`` while ``has_more`` is true.
    """
    from watcher.sources import normalise as n

    rid = n.envelope_request_id(raw)
    body = n.require_object(raw, "response body", rid)
    data = n.require_object(body.get("data"), "data", rid)
    rows = n.require_list(data, "list", "data.list", rid)
    pagination = n.require_object(data.get("pagination"), "data.pagination", rid)
    has_more = n.require_bool(pagination, "has_more", "data.pagination.has_more", rid)
    next_page: int | None = None
    if has_more:
        current = n.to_count(pagination.get("page"))
        if not current:
            raise n.MalformedPayload(
                f"data.pagination.page is {n.show(pagination.get('page'))} while has_more is true",
                request_id=rid,
            )
        next_page = current + 1
    products, skipped = n.product_rows(rows, "data.list", rid, lambda row, _path: _product(row))
    return n.ParsedPage(products, has_more, next_page, rid, charged_credits(body), skipped=skipped)


PROVIDER = ProviderSpec(
    name=NAME,
    base_url=BASE_URL,
    price=PRICE,
    auth=lambda key: {"Authorization": f"Bearer {key}"},
    credits=credits,
    request_id=lambda body: text_at(body, "requestId"),
    error_message=lambda body: text_at(body, "message"),
    body_status=body_status,
    sources=(
        SourceSpec(
            watch_type="top_products",
            provider=NAME,
            paging="page",
            path=lambda watch: "/v1/tiktok/insights/products",
            params=lambda watch: present(
                limit=str(PAGE_SIZE),
                ecom_category_id=watch.category_id,
                search_keyword=watch.keyword,
                time_scope=watch.time_scope,
                region=watch.region,
            ),
            parse=parse_keyapi_page,
            doc="A KeyAPI top-products category ranking (category aggregates, no prices).",
            keys={
                "category_id": Param("str", doc="ecom_category_id (third-level category)"),
                "keyword": Param("str", doc="search_keyword"),
                "time_scope": Param("str", doc="KeyAPI time_scope"),
                "region": Param("str", doc="free text; KeyAPI default is all_regions"),
            },
            one_of=("category_id", "keyword"),
        ),
    ),
)
