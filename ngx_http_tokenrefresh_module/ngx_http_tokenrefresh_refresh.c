
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * Refreshes and logins: started by the worker that took the lease, sent to
 * a user-configured internal location, their answer collected by this
 * module's filters (it never reaches a client), judged, and settled in one
 * place: store or fail, persist, release the lease, wake the waiters.
 *
 * A token request belongs to the worker, not to the client request that
 * noticed the need for it: it is a subrequest of a request the worker owns
 * (ngx_http_tokenrefresh_task.c), so that no client that hangs up, times
 * out or fails to read its answer can cancel a refresh that was sent.  A
 * refresh token sent and then forgotten may have been rotated by the
 * provider: sending it again would look like a reuse.  The token request
 * carries none of the client's headers or body.
 */


#include "ngx_http_tokenrefresh_module.h"


/*
 * A lease to release once the journal and the fleet have what its refresh
 * stored: "pending" counts what is still due
 */
typedef struct {
    ngx_http_tokenrefresh_zone_t     *zone;
    ngx_http_tokenrefresh_ref_t       ref;
    ngx_uint_t                        lease_seq;
    ngx_uint_t                        pending;
} ngx_http_tokenrefresh_durable_t;


static void ngx_http_tokenrefresh_refresh_init(
    ngx_http_tokenrefresh_refresh_t *rf, ngx_http_tokenrefresh_ctx_t *ctx,
    ngx_http_tokenrefresh_acquire_t *res,
    ngx_http_tokenrefresh_loc_conf_t *tlcf);
static ngx_int_t ngx_http_tokenrefresh_add_header(ngx_http_request_t *r,
    ngx_http_request_t *sr, char *key, char *lowcase, char *value);
static ngx_int_t ngx_http_tokenrefresh_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static ngx_uint_t ngx_http_tokenrefresh_outcome(
    ngx_http_tokenrefresh_refresh_t *rf, ngx_int_t rc, ngx_str_t *reason);
static ngx_http_tokenrefresh_format_t *ngx_http_tokenrefresh_resolve_format(
    ngx_http_request_t *sr, ngx_http_tokenrefresh_refresh_t *rf);
static void ngx_http_tokenrefresh_deadline(ngx_event_t *ev);
static void ngx_http_tokenrefresh_persist(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_uint_t journal, ngx_uint_t share, ngx_log_t *log);
static void ngx_http_tokenrefresh_durable(void *data, ngx_int_t rc);
static void ngx_http_tokenrefresh_durable_done(void *data);
static void ngx_http_tokenrefresh_refresh_cleanup(void *data);
static void ngx_http_tokenrefresh_open_location(ngx_http_request_t *r);
static void ngx_http_tokenrefresh_retry_after(ngx_http_request_t *sr,
    ngx_http_tokenrefresh_refresh_t *rf);
static ngx_int_t ngx_http_tokenrefresh_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_tokenrefresh_collect(ngx_http_request_t *r,
    ngx_http_tokenrefresh_refresh_t *rf, ngx_buf_t *b);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;

/* this worker's refreshes in flight */
static ngx_queue_t                       ngx_http_tokenrefresh_refreshes;


ngx_int_t
ngx_http_tokenrefresh_init_refresh(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_http_tokenrefresh_refreshes);

    return NGX_OK;
}


ngx_int_t
ngx_http_tokenrefresh_start(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_acquire_t *res,
    ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    ngx_str_t                        *uri, *args, reason;
    ngx_event_t                      *ev;
    ngx_pool_cleanup_t               *cln;
    ngx_http_request_t               *parent, *sr;
    ngx_http_tokenrefresh_refresh_t  *rf, abandoned;

    if (res->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH) {
        uri = &tlcf->refresh_uri;
        args = &tlcf->refresh_args;

    } else {
        uri = &tlcf->login_uri;
        args = &tlcf->login_args;
    }

    rf = NULL;
    cln = NULL;

    parent = ngx_http_tokenrefresh_task_create(r, uri);

    if (parent) {
        rf = ngx_pcalloc(parent->pool,
                         sizeof(ngx_http_tokenrefresh_refresh_t));
        cln = ngx_pool_cleanup_add(parent->pool, 0);
    }

    if (rf == NULL || cln == NULL) {

        /* the lease is given back at once, through the one exit */

        rf = &abandoned;
        ngx_memzero(rf, sizeof(ngx_http_tokenrefresh_refresh_t));
        ngx_http_tokenrefresh_refresh_init(rf, ctx, res, tlcf);
        rf->name = ctx->name;
        rf->log_name = ctx->log_name;

        ngx_str_set(&reason, "the request for it could not be created");
        ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_ABORTED, NULL,
                                     &reason, r->connection->log);

        if (parent) {
            ngx_http_tokenrefresh_task_stop(parent);
        }

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "tokenrefresh: could not start a %s for credential "
                      "\"%V\"", ngx_http_tokenrefresh_grant_names[res->grant],
                      &ctx->log_name);

        return NGX_ERROR;
    }

    ngx_http_tokenrefresh_refresh_init(rf, ctx, res, tlcf);

    rf->parent = parent;

    /* from now on, the end of the parent settles it if nothing else did */

    ngx_queue_insert_tail(&ngx_http_tokenrefresh_refreshes, &rf->queue);

    cln->handler = ngx_http_tokenrefresh_refresh_cleanup;
    cln->data = rf;

    /* the client's pool may go before the refresh: copies of its own */

    rf->name.data = ngx_pstrdup(parent->pool, &ctx->name);
    rf->name.len = ctx->name.len;
    rf->log_name.data = ngx_pstrdup(parent->pool, &ctx->log_name);
    rf->log_name.len = ctx->log_name.len;
    rf->refresh_token.data = ngx_pstrdup(parent->pool, &res->refresh_token);
    rf->refresh_token.len = res->refresh_token.len;
    rf->access_token.data = ngx_pstrdup(parent->pool, &res->access_token);
    rf->access_token.len = res->access_token.len;
    rf->kept.data = ngx_pstrdup(parent->pool, &res->kept);
    rf->kept.len = res->kept.len;

    if (rf->name.data == NULL || rf->log_name.data == NULL
        || (res->refresh_token.len && rf->refresh_token.data == NULL)
        || (res->access_token.len && rf->access_token.data == NULL)
        || (res->kept.len && rf->kept.data == NULL))
    {
        rf->name = ctx->name;
        rf->log_name = ctx->log_name;
        ngx_str_set(&reason, "no memory for its tokens");
        goto stop;
    }

    rf->ps.handler = ngx_http_tokenrefresh_done;
    rf->ps.data = rf;

    ngx_http_set_ctx(parent, rf, ngx_http_tokenrefresh_module);

    if (ngx_http_subrequest(parent, uri, args, &sr, &rf->ps, 0) != NGX_OK) {
        ngx_str_set(&reason, "its subrequest could not be created");
        goto stop;
    }

    rf->request = sr;

    if (ngx_http_tokenrefresh_token_subrequest(parent, sr) != NGX_OK) {
        ngx_str_set(&reason, "its subrequest could not be set up");
        goto stop;
    }

    /*
     * The refresh has its own deadline, shorter than the lease, whatever
     * timeouts the token location sets: the lease must never expire while
     * its refresh is still in flight.  The deadline stops the refresh
     * wherever it is, in limit_req or waiting for a cache lock too.
     */

    ev = &rf->deadline;
    ev->handler = ngx_http_tokenrefresh_deadline;
    ev->data = parent->connection;
    ev->log = parent->connection->log;

    ngx_add_timer(ev, tlcf->refresh_timeout);

    /* it runs from a clean stack, not inside the client's request */

    ev = &rf->run;
    ev->handler = ngx_http_tokenrefresh_task_run;
    ev->data = parent->connection;
    ev->log = parent->connection->log;

    /* with a fleet, once the fleet says this node may send it */

    if (ngx_http_tokenrefresh_fleet_lease(rf) == NGX_DECLINED) {
        ngx_post_event(ev, &ngx_posted_events);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tokenrefresh: %s of credential \"%V\" started, "
                   "lease %ui",
                   ngx_http_tokenrefresh_grant_names[rf->grant],
                   &rf->log_name, rf->lease_seq);

    return NGX_OK;

stop:

    ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_ABORTED, NULL,
                                 &reason, r->connection->log);
    ngx_http_tokenrefresh_task_stop(parent);

    return NGX_ERROR;
}


static void
ngx_http_tokenrefresh_refresh_init(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_acquire_t *res,
    ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    rf->zone = ctx->zone;
    rf->lcf = tlcf;
    rf->ref = res->ref;
    rf->lease_seq = res->lease_seq;
    rf->grant = res->grant;
    rf->fleet_sync = res->sync;
    rf->session = ctx->session;
    rf->start = ngx_current_msec;
    rf->asked = ngx_http_tokenrefresh_now();

    ngx_memcpy(rf->digest, res->refresh_digest,
               NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
}


/*
 * A subrequest shares its parent's headers and body; the worker's own
 * request has none, and the token request gets headers of its own: a form
 * content type and "Accept: application/json", both of which the token
 * location may replace with proxy_set_header, and an empty body.  Token
 * endpoints take POST (RFC 6749, section 3.2).
 */

ngx_int_t
ngx_http_tokenrefresh_token_subrequest(ngx_http_request_t *r,
    ngx_http_request_t *sr)
{
    ngx_http_request_body_t  *rb;

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    if (ngx_list_init(&sr->headers_in.headers, r->pool, 2,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sr->headers_in.server = r->headers_in.server;
    sr->headers_in.content_length_n = 0;
    sr->headers_in.keep_alive_n = -1;

    if (ngx_http_tokenrefresh_add_header(r, sr, "Content-Type",
                                         "content-type",
                                         "application/x-www-form-urlencoded")
        != NGX_OK
        || ngx_http_tokenrefresh_add_header(r, sr, "Accept", "accept",
                                            "application/json")
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (rb == NULL) {
        return NGX_ERROR;
    }

    sr->request_body = rb;

    sr->method = NGX_HTTP_POST;
    ngx_str_set(&sr->method_name, "POST");
    sr->header_only = 0;

    return NGX_OK;
}


/*
 * The hash of the lower-case name, as nginx's parser computes it: without
 * it, proxy_set_header cannot find the header to replace, and both go.
 */

static ngx_int_t
ngx_http_tokenrefresh_add_header(ngx_http_request_t *r,
    ngx_http_request_t *sr, char *key, char *lowcase, char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&sr->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->lowcase_key = (u_char *) lowcase;
    h->hash = ngx_hash_key(h->lowcase_key, h->key.len);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    if (h->key.len == sizeof("Content-Type") - 1) {
        sr->headers_in.content_type = h;
    }

    return NGX_OK;
}


ngx_http_tokenrefresh_refresh_t *
ngx_http_tokenrefresh_get_refresh(ngx_http_request_t *r)
{
    /* survives internal redirects within the token location, unlike ctx */

    if (r->post_subrequest
        && r->post_subrequest->handler == ngx_http_tokenrefresh_done)
    {
        return r->post_subrequest->data;
    }

    return NULL;
}


static ngx_int_t
ngx_http_tokenrefresh_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_http_tokenrefresh_refresh_t *rf = data;

    u_char                          buf[NGX_MAX_ERROR_STR];
    ngx_str_t                       reason;
    ngx_uint_t                      outcome;
    const char                     *err;
    ngx_http_tokenrefresh_token_t   tok;

    /*
     * the response was consumed here; whatever the status, nginx must
     * not make an error page of it: the handler returns NGX_OK
     */

    if (rf->done) {
        /* a late call: the outcome was settled already (the deadline) */
        return NGX_OK;
    }

    reason.data = buf;
    reason.len = 0;

    outcome = ngx_http_tokenrefresh_outcome(rf, rc, &reason);

    if (outcome != NGX_HTTP_TOKENREFRESH_OK) {
        ngx_http_tokenrefresh_settle(rf, outcome, NULL, &reason,
                                     sr->connection->log);
        return NGX_OK;
    }

    /* the lifetime counts from when the token was asked for */

    err = ngx_http_tokenrefresh_parse_response(sr->pool, rf->body->pos,
                                   rf->body->last - rf->body->pos,
                                   ngx_http_tokenrefresh_resolve_format(sr, rf),
                                   rf->zone->max_token_size, rf->asked, &tok);
    if (err) {
        reason.len = ngx_snprintf(buf, sizeof(buf),
                                  "invalid token response: %s", err)
                     - buf;

        /*
         * A provider that rotates refresh tokens has spent the one we sent
         * as soon as it answered: a valid successor is kept even if the
         * rest of the answer is not.
         */

        tok.access_token.len = 0;

        ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_BAD,
                                     (tok.refresh_token.len
                                      && rf->grant
                                         == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH)
                                     ? &tok : NULL,
                                     &reason, sr->connection->log);
        return NGX_OK;
    }

    if (tok.expires <= ngx_http_tokenrefresh_now()) {

        /*
         * a lifetime shorter than the way here: storing it would have
         * every waiting request ask for the next one at once
         */

        reason.len = ngx_snprintf(buf, sizeof(buf),
                                  "the token expired before it arrived "
                                  "(a lifetime of %L ms, the answer took "
                                  "%M ms)", tok.expires - tok.issued,
                                  ngx_current_msec - rf->start)
                     - buf;

        ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_BAD, NULL,
                                     &reason, sr->connection->log);
        return NGX_OK;
    }

    ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_OK, &tok, NULL,
                                 sr->connection->log);

    return NGX_OK;
}


/*
 * The one place where a refresh ends, whatever ended it: the answer, the
 * deadline, the worker shutting down.  The new tokens (or the refused
 * refresh token) are on disk before the lease is released, so that no
 * other refresh can start from an older state.  In a zone a reload
 * replaced, the outcome goes to the new zone instead, which saves it.
 */

void
ngx_http_tokenrefresh_settle(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_uint_t outcome, ngx_http_tokenrefresh_token_t *tok,
    ngx_str_t *reason, ngx_log_t *log)
{
    u_char      fp[NGX_HTTP_TOKENREFRESH_FP_LEN];
    ngx_int_t   rc;
    ngx_str_t   noroom;
    ngx_uint_t  persist, stored, share, wake;

    if (rf->done) {
        return;
    }

    wake = 1;

    rf->done = 1;

    if (rf->deadline.timer_set) {
        ngx_del_timer(&rf->deadline);
    }

    persist = 0;
    stored = 0;
    share = 0;

    if (tok) {
        rc = ngx_http_tokenrefresh_store(rf, tok, log);

        if (rc == NGX_OK) {
            persist = 1;
            share = 1;
            stored = (tok->access_token.len != 0);

        } else if (rc == NGX_ERROR && outcome == NGX_HTTP_TOKENREFRESH_OK) {
            outcome = NGX_HTTP_TOKENREFRESH_NOROOM;
            ngx_str_set(&noroom, "the zone is full");
            reason = &noroom;

        } else if (rc == NGX_DECLINED) {
            /* the lease is gone: nothing of this answer may be kept */
            goto done;
        }
    }

    if (outcome != NGX_HTTP_TOKENREFRESH_OK
        && ngx_http_tokenrefresh_fail(rf, outcome, reason, log) == NGX_OK)
    {
        persist = 1;
    }

    if (ngx_http_tokenrefresh_superseded(rf->zone)) {
        /* the fleet has it too: nobody there sends the spent token */
        (void) ngx_http_tokenrefresh_fleet_settle(rf, share, NULL, NULL);
        ngx_http_tokenrefresh_hand_over(rf, stored || persist ? tok : NULL,
                                        outcome, log);
        ngx_http_tokenrefresh_release(rf);

    } else if ((persist && rf->zone->state) || (share && rf->fleet_lease)) {
        /* the waiters wake when it is on disk and in the fleet */
        ngx_http_tokenrefresh_persist(rf, persist && rf->zone->state, share,
                                      log);
        wake = 0;

    } else {
        (void) ngx_http_tokenrefresh_fleet_settle(rf, 0, NULL, NULL);
        ngx_http_tokenrefresh_release(rf);
    }

    if (stored && !rf->fleet_adopt) {
        ngx_http_tokenrefresh_fingerprint(fp, tok->access_token.data,
                                          tok->access_token.len);

        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "tokenrefresh: %s of credential \"%V\" succeeded in "
                      "%M ms, token %*s, expires in %L s%s",
                      ngx_http_tokenrefresh_grant_names[rf->grant],
                      &rf->log_name, ngx_current_msec - rf->start,
                      (size_t) NGX_HTTP_TOKENREFRESH_FP_LEN, fp,
                      (tok->expires - tok->issued) / 1000,
                      tok->refresh_token.len ? ", new refresh token" : "");
    }

done:

    if (wake) {
        ngx_http_tokenrefresh_wake_local();
    }
}


/*
 * What the refresh changed goes to the journal, and the lease is released
 * only once it is on disk: nobody may send a rotated refresh token that a
 * restart could forget.  The refresh's request may be gone by then.
 */

static void
ngx_http_tokenrefresh_persist(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_uint_t journal, ngx_uint_t share, ngx_log_t *log)
{
    ngx_http_tokenrefresh_durable_t  *d;

    d = ngx_alloc(sizeof(ngx_http_tokenrefresh_durable_t), log);
    if (d == NULL) {
        (void) ngx_http_tokenrefresh_fleet_settle(rf, 0, NULL, NULL);
        ngx_http_tokenrefresh_release(rf);
        ngx_http_tokenrefresh_wake_local();
        return;
    }

    d->zone = rf->zone;
    d->ref = rf->ref;
    d->lease_seq = rf->lease_seq;

    /* one for this function: either answer may come before it returns */
    d->pending = 1;

    if (journal) {
        d->pending++;
        (void) ngx_http_tokenrefresh_journal_put(rf->zone, &rf->name,
                                                 rf->session, rf->digest,
                                                 ngx_http_tokenrefresh_durable,
                                                 d, log);
    }

    d->pending++;

    if (ngx_http_tokenrefresh_fleet_settle(rf, share,
                                           ngx_http_tokenrefresh_durable_done,
                                           d)
        != NGX_OK)
    {
        d->pending--;
    }

    ngx_http_tokenrefresh_durable_done(d);
}


static void
ngx_http_tokenrefresh_durable(void *data, ngx_int_t rc)
{
    ngx_http_tokenrefresh_durable_done(data);
}


static void
ngx_http_tokenrefresh_durable_done(void *data)
{
    ngx_http_tokenrefresh_durable_t *d = data;

    if (--d->pending) {
        return;
    }

    /* written or not (it was logged), the lease goes: nothing can wait */

    ngx_http_tokenrefresh_release_lease(d->zone, &d->ref, d->lease_seq);
    ngx_free(d);

    ngx_http_tokenrefresh_wake_local();
}


/*
 * The worker's request of a refresh ended before it was settled (it was
 * cut by the worker's shutdown, or nginx's own close path ran): a refresh
 * that was sent has an unknown outcome, one that was not is abandoned.
 * Either way the lease goes, and the refresh token is kept.
 */

void
ngx_http_tokenrefresh_cut(ngx_http_request_t *parent, char *why)
{
    ngx_str_t                         reason;
    ngx_http_tokenrefresh_refresh_t  *rf;

    rf = ngx_http_get_module_ctx(parent, ngx_http_tokenrefresh_module);

    if (rf == NULL || rf->done) {
        return;
    }

    reason.data = (u_char *) why;
    reason.len = ngx_strlen(why);

    ngx_http_tokenrefresh_settle(rf,
                                 ngx_http_tokenrefresh_task_sent(rf->request)
                                 ? NGX_HTTP_TOKENREFRESH_UNKNOWN
                                 : NGX_HTTP_TOKENREFRESH_ABORTED,
                                 NULL, &reason, ngx_cycle->log);
}


/* the fleet announced news of a credential: its waiting refresh asks now */

void
ngx_http_tokenrefresh_fleet_pokes(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *name, ngx_uint_t released)
{
    ngx_queue_t                      *q;
    ngx_http_tokenrefresh_refresh_t  *rf;

    if (ngx_http_tokenrefresh_refreshes.next == NULL) {
        return;
    }

    for (q = ngx_queue_head(&ngx_http_tokenrefresh_refreshes);
         q != ngx_queue_sentinel(&ngx_http_tokenrefresh_refreshes);
         q = ngx_queue_next(q))
    {
        rf = ngx_queue_data(q, ngx_http_tokenrefresh_refresh_t, queue);

        if (rf->zone == zone && !rf->done
            && (rf->fleet_poll.timer_set || rf->fleet)
            && rf->name.len == name->len
            && ngx_memcmp(rf->name.data, name->data, name->len) == 0)
        {
            if (released) {
                rf->fleet_held_until = 0;
            }

            ngx_http_tokenrefresh_fleet_poke(rf);
            return;
        }
    }
}


/*
 * Redis lost its data: the fleet's leases of this worker's refreshes in
 * flight are claimed again, before any other node may take them and send
 * the same refresh token.  Returns how many.
 */

ngx_uint_t
ngx_http_tokenrefresh_fleet_reclaim(ngx_http_tokenrefresh_zone_t *zone)
{
    ngx_uint_t                        n;
    ngx_queue_t                      *q;
    ngx_http_tokenrefresh_refresh_t  *rf;

    n = 0;

    if (ngx_http_tokenrefresh_refreshes.next == NULL) {
        return 0;
    }

    for (q = ngx_queue_head(&ngx_http_tokenrefresh_refreshes);
         q != ngx_queue_sentinel(&ngx_http_tokenrefresh_refreshes);
         q = ngx_queue_next(q))
    {
        rf = ngx_queue_data(q, ngx_http_tokenrefresh_refresh_t, queue);

        if (rf->zone == zone && !rf->done && rf->fleet_lease
            && ngx_http_tokenrefresh_fleet_claim(rf) == NGX_OK)
        {
            n++;
        }
    }

    return n;
}


/* a worker that exits (nginx -s stop) settles what it has in flight */

void
ngx_http_tokenrefresh_exit_refreshes(void)
{
    ngx_queue_t                      *q;
    ngx_http_tokenrefresh_refresh_t  *rf;

    if (ngx_http_tokenrefresh_refreshes.next == NULL) {
        return;
    }

    for (q = ngx_queue_head(&ngx_http_tokenrefresh_refreshes);
         q != ngx_queue_sentinel(&ngx_http_tokenrefresh_refreshes);
         q = ngx_queue_next(q))
    {
        rf = ngx_queue_data(q, ngx_http_tokenrefresh_refresh_t, queue);
        ngx_http_tokenrefresh_cut(rf->parent, "the worker exits");
    }
}


/* judges the answer; the reason goes into one log line, never its bytes */

static ngx_uint_t
ngx_http_tokenrefresh_outcome(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_int_t rc, ngx_str_t *reason)
{
    u_char                             *p, *last;
    ngx_str_t                           code;
    ngx_http_tokenrefresh_main_conf_t  *tmcf;

    p = reason->data;
    last = p + NGX_MAX_ERROR_STR;

    if (rf->status == 0) {

        /* no answer at all: the upstream module logged why */

        if (rc == NGX_HTTP_GATEWAY_TIME_OUT) {
            p = ngx_slprintf(p, last, "the token endpoint timed out");
            reason->len = p - reason->data;
            return NGX_HTTP_TOKENREFRESH_TIMEDOUT;
        }

        p = (rf->request->upstream == NULL && rc >= NGX_HTTP_SPECIAL_RESPONSE)
            ? ngx_slprintf(p, last, "the token location answered %i "
                           "itself: it has no proxy_pass to a token "
                           "endpoint?", rc)
            : ngx_slprintf(p, last, "no answer from the token endpoint "
                           "(%i)", rc);
        reason->len = p - reason->data;
        return NGX_HTTP_TOKENREFRESH_BAD;
    }

    if (rf->status == NGX_HTTP_BAD_REQUEST
        || rf->status == NGX_HTTP_UNAUTHORIZED)
    {
        /*
         * RFC 6749: only invalid_grant says that the grant (the refresh
         * token, the user's password) is no good; any other error is about
         * the client or the request, and a refresh token the provider did
         * not even look at is kept.  A custom login API that answers
         * without an error code says "no" by its status alone.
         */

        tmcf = ngx_http_get_module_main_conf(rf->request,
                                             ngx_http_tokenrefresh_module);

        if (rf->body
            && ngx_http_tokenrefresh_parse_error(rf->request->pool,
                                                 rf->body->pos,
                                                 rf->body->last
                                                 - rf->body->pos,
                                                 &tmcf->error, &code)
               == NGX_OK)
        {
            p = ngx_slprintf(p, last, "the token endpoint answered %ui %V",
                             rf->status, &code);
            reason->len = p - reason->data;

            if (code.len == sizeof("invalid_grant") - 1
                && ngx_strncmp(code.data, "invalid_grant", code.len) == 0)
            {
                return NGX_HTTP_TOKENREFRESH_REFUSED;
            }

            return NGX_HTTP_TOKENREFRESH_DENIED;
        }

        p = ngx_slprintf(p, last, "the token endpoint answered %ui",
                         rf->status);
        reason->len = p - reason->data;
        return NGX_HTTP_TOKENREFRESH_REFUSED;
    }

    if (rf->status < 200 || rf->status > 299) {
        p = ngx_slprintf(p, last, "the token endpoint answered %ui",
                         rf->status);
        reason->len = p - reason->data;
        return NGX_HTTP_TOKENREFRESH_BAD;
    }

    if (!rf->complete || rf->body == NULL || rc == NGX_ERROR
        || rc >= NGX_HTTP_SPECIAL_RESPONSE)
    {
        p = ngx_slprintf(p, last, "%s answer from the token endpoint",
                         rf->too_big ? "an oversized"
                         : rf->body ? "an incomplete" : "an empty");
        reason->len = p - reason->data;
        return NGX_HTTP_TOKENREFRESH_BAD;
    }

    return NGX_HTTP_TOKENREFRESH_OK;
}


/*
 * The format is resolved once the subrequest has found its location (an
 * internal redirect in the token location is followed), at its first
 * output at the latest.
 */

static ngx_http_tokenrefresh_format_t *
ngx_http_tokenrefresh_resolve_format(ngx_http_request_t *sr,
    ngx_http_tokenrefresh_refresh_t *rf)
{
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    if (rf->format_set) {
        return &rf->format;
    }

    rf->format_set = 1;

    tlcf = ngx_http_get_module_loc_conf(sr, ngx_http_tokenrefresh_module);

    ngx_http_tokenrefresh_format(sr, &tlcf->format, &rf->lcf->format,
                                 &rf->format);

    return &rf->format;
}


/* t: the token location's settings, u: where the credential is used */

void
ngx_http_tokenrefresh_format(ngx_http_request_t *r,
    ngx_http_tokenrefresh_format_t *t, ngx_http_tokenrefresh_format_t *u,
    ngx_http_tokenrefresh_format_t *f)
{
    ngx_http_tokenrefresh_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_tokenrefresh_module);

#define ngx_http_tokenrefresh_pick(field, unset, def)                         \
    f->field = (t->field != unset) ? t->field                                 \
               : (u->field != unset) ? u->field : def

    ngx_http_tokenrefresh_pick(access, NGX_CONF_UNSET_PTR,
                               &tmcf->access_token);
    ngx_http_tokenrefresh_pick(refresh, NGX_CONF_UNSET_PTR,
                               &tmcf->refresh_token);
    ngx_http_tokenrefresh_pick(expires_in, NGX_CONF_UNSET_PTR,
                               &tmcf->expires_in);
    ngx_http_tokenrefresh_pick(expires_at, NGX_CONF_UNSET_PTR, NULL);
    ngx_http_tokenrefresh_pick(default_lifetime, NGX_CONF_UNSET_MSEC,
                               300000);
    ngx_http_tokenrefresh_pick(max_response_size, NGX_CONF_UNSET_SIZE,
                               64 * 1024);

#undef ngx_http_tokenrefresh_pick

    /* the unit goes with the pointer it qualifies */

    if (t->expires_at != NGX_CONF_UNSET_PTR) {
        f->expires_at_msec = (t->expires_at_msec == 1);

    } else {
        f->expires_at_msec = (u->expires_at_msec == 1);
    }
}


static void
ngx_http_tokenrefresh_deadline(ngx_event_t *ev)
{
    u_char                            buf[NGX_MAX_ERROR_STR];
    ngx_str_t                         reason;
    ngx_http_request_t               *parent;
    ngx_http_tokenrefresh_refresh_t  *rf;

    rf = (ngx_http_tokenrefresh_refresh_t *)
             ((u_char *) ev - offsetof(ngx_http_tokenrefresh_refresh_t,
                                       deadline));

    parent = rf->parent;

    reason.data = buf;

    if (rf->fleet_waiting) {

        /* it was never sent: the fleet did not let it go in time */

        reason.len = ngx_snprintf(buf, sizeof(buf), "%s for %M ms",
                                  rf->fleet_away
                                  ? "the fleet's redis was away"
                                  : "another node held the fleet's lease",
                                  rf->lcf->refresh_timeout)
                     - buf;

        ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_ABORTED, NULL,
                                     &reason, ev->log);
        ngx_http_tokenrefresh_task_stop(parent);
        return;
    }

    reason.len = ngx_snprintf(buf, sizeof(buf), "no answer from the token "
                              "endpoint within %M ms",
                              rf->lcf->refresh_timeout)
                 - buf;

    ngx_http_tokenrefresh_settle(rf, NGX_HTTP_TOKENREFRESH_TIMEDOUT, NULL,
                                 &reason, ev->log);

    /* wherever it is, the token request stops; rf goes with it */

    ngx_http_tokenrefresh_task_stop(parent);
}


/* the worker's request of a refresh is freed */

static void
ngx_http_tokenrefresh_refresh_cleanup(void *data)
{
    ngx_http_tokenrefresh_refresh_t *rf = data;

    ngx_queue_remove(&rf->queue);

    if (rf->run.posted) {
        ngx_delete_posted_event(&rf->run);
    }

    if (rf->fleet_poll.timer_set) {
        ngx_del_timer(&rf->fleet_poll);
    }

    if (rf->deadline.timer_set) {
        ngx_del_timer(&rf->deadline);
    }

    if (!rf->done) {
        ngx_http_tokenrefresh_cut(rf->parent, "its request ended");
    }
}


static ngx_int_t
ngx_http_tokenrefresh_header_filter(ngx_http_request_t *r)
{
    ngx_http_tokenrefresh_format_t   *fmt;
    ngx_http_tokenrefresh_refresh_t  *rf;

    rf = ngx_http_tokenrefresh_get_refresh(r);

    if (rf == NULL) {
        return ngx_http_next_header_filter(r);
    }

    if (rf->done) {
        /* an error page nginx makes after the outcome was settled */
        r->header_sent = 1;
        return NGX_OK;
    }

    rf->status = r->headers_out.status;

    ngx_http_tokenrefresh_open_location(r);

    ngx_http_tokenrefresh_retry_after(r, rf);

    fmt = ngx_http_tokenrefresh_resolve_format(r, rf);

    if (r->headers_out.content_length_n > (off_t) fmt->max_response_size) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: token response of %O bytes for "
                      "credential \"%V\" exceeds "
                      "tokenrefresh_max_response_size %uz",
                      r->headers_out.content_length_n, &rf->log_name,
                      fmt->max_response_size);
        rf->too_big = 1;
        return NGX_ERROR;
    }

    /* the response ends here: nothing of it goes to the client */

    r->header_sent = 1;

    return NGX_OK;
}


/*
 * A token location that is not internal gives tokens to whoever calls it:
 * said once per location and worker.  The module cannot tell at nginx -t,
 * where the URI has not been matched to a location yet.
 */

static void
ngx_http_tokenrefresh_open_location(ngx_http_request_t *r)
{
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    if (clcf->internal || tlcf->warned_open) {
        return;
    }

    tlcf->warned_open = 1;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "tokenrefresh: the token location \"%V\" is not "
                  "internal: clients can call it and get tokens; add "
                  "\"internal;\" to it", &clcf->name);
}


/* a provider that says when to come back is taken at its word */

static void
ngx_http_tokenrefresh_retry_after(ngx_http_request_t *sr,
    ngx_http_tokenrefresh_refresh_t *rf)
{
    time_t            t;
    ngx_int_t         n;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &sr->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != sizeof("Retry-After") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Retry-After",
                               sizeof("Retry-After") - 1)
               != 0)
        {
            continue;
        }

        /* delay-seconds or an HTTP-date (RFC 9110, section 10.2.3) */

        n = ngx_atoi(h[i].value.data, h[i].value.len);

        if (n == NGX_ERROR) {
            t = ngx_parse_http_time(h[i].value.data, h[i].value.len);

            if (t == NGX_ERROR || t <= ngx_time()) {
                return;
            }

            n = t - ngx_time();
        }

        rf->retry_after = (n > NGX_HTTP_TOKENREFRESH_MAX_RETRY / 1000)
                          ? NGX_HTTP_TOKENREFRESH_MAX_RETRY
                          : (ngx_msec_t) n * 1000;
        return;
    }
}


static ngx_int_t
ngx_http_tokenrefresh_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t                      *cl;
    ngx_http_tokenrefresh_refresh_t  *rf;

    rf = ngx_http_tokenrefresh_get_refresh(r);

    if (rf == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {

        if (rf->done) {
            cl->buf->pos = cl->buf->last;
            cl->buf->file_pos = cl->buf->file_last;
            continue;
        }

        if (ngx_http_tokenrefresh_collect(r, rf, cl->buf) != NGX_OK) {
            return NGX_ERROR;
        }

        if (cl->buf->last_buf || cl->buf->last_in_chain) {
            rf->complete = 1;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_collect(ngx_http_request_t *r,
    ngx_http_tokenrefresh_refresh_t *rf, ngx_buf_t *b)
{
    off_t                              size;
    size_t                             max;
    ssize_t                            n;
    ngx_int_t                          rc;

    if (ngx_buf_in_memory(b)) {
        size = b->last - b->pos;

    } else if (b->in_file) {
        size = b->file_last - b->file_pos;

    } else {
        return NGX_OK;
    }

    if (size == 0) {
        return NGX_OK;
    }

    max = ngx_http_tokenrefresh_resolve_format(r, rf)->max_response_size;

    rc = ngx_http_tokenrefresh_room_for(r->pool, &rf->body, (size_t) size,
                                        max);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: token response for credential \"%V\" "
                      "exceeds tokenrefresh_max_response_size %uz",
                      &rf->log_name, max);
        rf->too_big = 1;
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_buf_in_memory(b)) {
        rf->body->last = ngx_cpymem(rf->body->last, b->pos, (size_t) size);
        b->pos = b->last;
        return NGX_OK;
    }

    n = ngx_read_file(b->file, rf->body->last, (size_t) size, b->file_pos);

    if (n != size) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: could not read the token response "
                      "for credential \"%V\" from its temporary file",
                      &rf->log_name);
        return NGX_ERROR;
    }

    rf->body->last += n;
    b->file_pos = b->file_last;

    return NGX_OK;
}


ngx_int_t
ngx_http_tokenrefresh_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_tokenrefresh_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_tokenrefresh_body_filter;

    return NGX_OK;
}


/*
 * A body collected in memory, up to max bytes: room for size more, grown
 * by doubling (a token or login answer is a few kilobytes).  NGX_DECLINED:
 * it would exceed max; NGX_ERROR: no memory.
 */

ngx_int_t
ngx_http_tokenrefresh_room_for(ngx_pool_t *pool, ngx_buf_t **body,
    size_t size, size_t max)
{
    size_t      want, len;
    ngx_buf_t  *b, *nb;

    b = *body;

    if (b == NULL) {
        b = ngx_create_temp_buf(pool, ngx_min(4096, max));
        if (b == NULL) {
            return NGX_ERROR;
        }

        *body = b;
    }

    len = b->last - b->pos;

    if (size > max - len) {
        return NGX_DECLINED;
    }

    if (size <= (size_t) (b->end - b->last)) {
        return NGX_OK;
    }

    want = 2 * (b->end - b->start);

    while (want < len + size) {
        want *= 2;
    }

    nb = ngx_create_temp_buf(pool, ngx_min(want, max));
    if (nb == NULL) {
        return NGX_ERROR;
    }

    nb->last = ngx_cpymem(nb->pos, b->pos, len);
    *body = nb;

    return NGX_OK;
}
