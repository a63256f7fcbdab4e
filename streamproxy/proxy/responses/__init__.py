"""The OpenAI Responses API face of the proxy, as pure translation (issue 11).

``POST /v1/responses`` runs in front of the same chat-completions upstream and the same tool
loop as ``/v1/chat/completions``:

1. ``load_body`` + ``translate_request`` turn the Responses body into a chat body
   (``ResponsesRequest.chat_body``), given the stored items of ``previous_response_id``
   (``previous_items``) and a lookup for ``item_reference`` items (``find_item``);
2. the tool loop runs on the chat body;
3. ``ResponsesEncoder`` turns the loop's chunk dicts into Responses SSE frames, or
   ``response_from_completion`` its finished ``chat.completion`` into a ``response`` object;
4. when ``ResponsesRequest.store`` is true, ``stored_items(request, response)`` is what to keep
   under the response's id (and its items, by their ``id``, for ``item_reference``).
"""

from streamproxy.proxy.responses.events import (
    ResponsesEncoder,
    response_from_completion,
    stored_items,
)
from streamproxy.proxy.responses.items import new_id, responses_usage
from streamproxy.proxy.responses.request import (
    ACCEPTED_FIELDS,
    ItemLookup,
    ResponsesRequest,
    items_to_messages,
    load_body,
    translate_request,
)

__all__ = [
    "ACCEPTED_FIELDS",
    "ItemLookup",
    "ResponsesEncoder",
    "ResponsesRequest",
    "items_to_messages",
    "load_body",
    "new_id",
    "response_from_completion",
    "responses_usage",
    "stored_items",
    "translate_request",
]
