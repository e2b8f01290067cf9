"""Webhooks for work-order events: a transactional outbox, HMAC-signed HTTP delivery with
retries and backoff, and a delivery log.

``outbox.enqueue`` is called by the work-order engine inside its transaction;
``delivery.WebhookDeliverer`` sends what is due; ``signing`` documents the signature
scheme for receivers; ``registry`` holds the configuration writes the API makes.
"""
