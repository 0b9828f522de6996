
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * Parking requests that need a token which is being fetched, and waking
 * them.  nginx offers a module no way to signal other workers, so each
 * worker that has parked requests looks at the shared "seq" of their
 * credentials every few milliseconds; a worker without parked requests
 * runs no timer at all.  The worker that stores a token wakes its own
 * parked requests at once.
 */


#include "ngx_http_tokenrefresh_module.h"


static void ngx_http_tokenrefresh_poll(ngx_event_t *ev);
static void ngx_http_tokenrefresh_wait_timeout(ngx_event_t *ev);
static void ngx_http_tokenrefresh_resume(ngx_http_tokenrefresh_ctx_t *ctx);


static ngx_queue_t       ngx_http_tokenrefresh_parked;
static ngx_event_t       ngx_http_tokenrefresh_poll_event;

/* timer events log their data as a connection: give them a dummy one */
static ngx_connection_t  ngx_http_tokenrefresh_dummy;


ngx_int_t
ngx_http_tokenrefresh_init_wait(ngx_cycle_t *cycle)
{
    ngx_event_t  *ev;

    ngx_queue_init(&ngx_http_tokenrefresh_parked);

    ev = &ngx_http_tokenrefresh_poll_event;

    ngx_memzero(ev, sizeof(ngx_event_t));

    ngx_http_tokenrefresh_dummy.fd = (ngx_socket_t) -1;

    ev->handler = ngx_http_tokenrefresh_poll;
    ev->data = &ngx_http_tokenrefresh_dummy;
    ev->log = cycle->log;

    /* parked requests hold their own timers; this one must not delay
     * a graceful shutdown */
    ev->cancelable = 1;

    return NGX_OK;
}


/* the wait limit counts from the first time a request had to wait */

void
ngx_http_tokenrefresh_wait_begin(ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    if (!ctx->waiting) {
        ctx->waiting = 1;
        ctx->wait_start = ngx_current_msec;
        ctx->wait_deadline = ngx_current_msec + tlcf->wait_timeout;
    }
}


ngx_int_t
ngx_http_tokenrefresh_park(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx)
{
    ngx_msec_t                     timer;
    ngx_event_t                   *ev;
    ngx_http_tokenrefresh_park_t  *pk;

    pk = ctx->park;

    if (pk == NULL) {
        pk = ngx_pcalloc(r->pool, sizeof(ngx_http_tokenrefresh_park_t));
        if (pk == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        pk->ctx = ctx;

        ev = &pk->event;
        ev->handler = ngx_http_tokenrefresh_wait_timeout;
        ev->data = r->connection;
        ev->log = r->connection->log;

        ctx->park = pk;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tokenrefresh: request parked for credential \"%V\", "
                   "leader:%ui seq:%ui",
                   &ctx->log_name, (ngx_uint_t) ctx->leader, ctx->seq);

    ngx_queue_insert_tail(&ngx_http_tokenrefresh_parked, &pk->queue);
    ctx->parked = 1;

    ev = &pk->event;

    timer = ctx->wait_deadline - ngx_current_msec;

    if ((ngx_msec_int_t) timer <= 0) {
        timer = 1;
    }

    ngx_add_timer(ev, timer);

    /*
     * A waiter whose client goes away is dropped (ngx_http_test_reading
     * finalizes it with 499, and the pool cleanup unparks it): the refresh
     * it waits for is the worker's, and goes on without it.
     */

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    if (!ngx_http_tokenrefresh_poll_event.timer_set) {
        ngx_add_timer(&ngx_http_tokenrefresh_poll_event,
                      NGX_HTTP_TOKENREFRESH_POLL);
    }

    return NGX_AGAIN;
}


void
ngx_http_tokenrefresh_unpark(ngx_http_tokenrefresh_ctx_t *ctx)
{
    if (!ctx->parked) {
        return;
    }

    ngx_queue_remove(&ctx->park->queue);
    ctx->parked = 0;

    if (ctx->park->event.timer_set) {
        ngx_del_timer(&ctx->park->event);
    }
}


void
ngx_http_tokenrefresh_wake_local(void)
{
    if (!ngx_queue_empty(&ngx_http_tokenrefresh_parked)) {
        ngx_post_event(&ngx_http_tokenrefresh_poll_event,
                       &ngx_posted_events);
    }
}


static void
ngx_http_tokenrefresh_poll(ngx_event_t *ev)
{
    ngx_queue_t                   *q, *next, ready;
    ngx_http_tokenrefresh_park_t  *pk;

    ngx_queue_init(&ready);

    for (q = ngx_queue_head(&ngx_http_tokenrefresh_parked);
         q != ngx_queue_sentinel(&ngx_http_tokenrefresh_parked);
         q = next)
    {
        next = ngx_queue_next(q);
        pk = ngx_queue_data(q, ngx_http_tokenrefresh_park_t, queue);

        if (ngx_http_tokenrefresh_changed(pk->ctx)) {
            ngx_queue_remove(q);
            ngx_queue_insert_tail(&ready, q);
        }
    }

    /*
     * Resuming one request may finalize others (an HTTP/2 connection
     * closes with all its streams); their cleanups unlink them from
     * "ready" as well, so the queue is consumed from its head each time.
     */

    while (!ngx_queue_empty(&ready)) {
        q = ngx_queue_head(&ready);
        pk = ngx_queue_data(q, ngx_http_tokenrefresh_park_t, queue);

        ngx_http_tokenrefresh_resume(pk->ctx);
    }

    if (!ngx_queue_empty(&ngx_http_tokenrefresh_parked)) {
        ngx_add_timer(ev, NGX_HTTP_TOKENREFRESH_POLL);

    } else if (ev->timer_set) {
        ngx_del_timer(ev);
    }
}


static void
ngx_http_tokenrefresh_wait_timeout(ngx_event_t *ev)
{
    ngx_http_tokenrefresh_park_t  *pk;

    pk = (ngx_http_tokenrefresh_park_t *)
             ((u_char *) ev - offsetof(ngx_http_tokenrefresh_park_t, event));

    ngx_http_tokenrefresh_resume(pk->ctx);
}


static void
ngx_http_tokenrefresh_resume(ngx_http_tokenrefresh_ctx_t *ctx)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    ngx_http_tokenrefresh_unpark(ctx);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "tokenrefresh: request resumed for credential \"%V\"",
                   &ctx->log_name);

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);

    ngx_http_run_posted_requests(c);
}
