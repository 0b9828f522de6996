
/*
 * Copyright (C) ngx_http_tokenrefresh_module authors
 *
 * The refresh and login subrequests: started by the worker that holds the
 * lease, sent to a user-configured internal location, their response
 * collected by this module's filters (it never reaches the client),
 * parsed and stored.
 *
 * The subrequests are background subrequests: the request that started
 * one may be answered (a refresh ahead of expiry) or give up waiting
 * while the refresh goes on, and the refresh is stored for everybody when
 * it completes.  They carry none of the client's headers or body.
 */


#include "ngx_http_tokenrefresh_module.h"


static ngx_int_t ngx_http_tokenrefresh_init_subrequest(ngx_http_request_t *r,
    ngx_http_request_t *sr);
static ngx_int_t ngx_http_tokenrefresh_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static ngx_uint_t ngx_http_tokenrefresh_outcome(
    ngx_http_tokenrefresh_refresh_t *rf, ngx_int_t rc, ngx_str_t *reason);
static void ngx_http_tokenrefresh_retry_after(ngx_http_request_t *sr,
    ngx_http_tokenrefresh_refresh_t *rf);
static ngx_http_tokenrefresh_format_t *ngx_http_tokenrefresh_resolve_format(
    ngx_http_request_t *sr, ngx_http_tokenrefresh_refresh_t *rf);
static void ngx_http_tokenrefresh_deadline(ngx_event_t *ev);
static void ngx_http_tokenrefresh_refresh_cleanup(void *data);
static ngx_int_t ngx_http_tokenrefresh_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_tokenrefresh_collect(ngx_http_request_t *r,
    ngx_http_tokenrefresh_refresh_t *rf, ngx_buf_t *b);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


ngx_int_t
ngx_http_tokenrefresh_start(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_acquire_t *res,
    ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    ngx_str_t                        *uri, *args, reason;
    ngx_event_t                      *ev;
    ngx_pool_cleanup_t               *cln;
    ngx_http_request_t               *sr;
    ngx_http_tokenrefresh_refresh_t  *rf;

    cln = ngx_pool_cleanup_add(r->pool,
                               sizeof(ngx_http_tokenrefresh_refresh_t));
    if (cln == NULL) {
        goto failed;
    }

    rf = cln->data;
    ngx_memzero(rf, sizeof(ngx_http_tokenrefresh_refresh_t));

    rf->zone = ctx->zone;
    rf->lcf = tlcf;
    rf->node = res->node;
    rf->node_id = res->node_id;
    rf->lease_seq = res->lease_seq;
    rf->grant = res->grant;
    rf->name = ctx->name;
    rf->refresh_token = res->refresh_token;
    rf->start = ngx_current_msec;

    rf->ps.handler = ngx_http_tokenrefresh_done;
    rf->ps.data = rf;

    cln->handler = ngx_http_tokenrefresh_refresh_cleanup;

    if (res->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH) {
        uri = &tlcf->refresh_uri;
        args = &tlcf->refresh_args;

        /* once rotated or refused, it is remembered as spent */
        ngx_http_tokenrefresh_digest(rf->digest, res->refresh_token.data,
                                     res->refresh_token.len);

    } else {
        uri = &tlcf->login_uri;
        args = &tlcf->login_args;
    }

    if (ngx_http_subrequest(r, uri, args, &sr, &rf->ps,
                            NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        goto failed_rf;
    }

    rf->request = sr;

    if (ngx_http_tokenrefresh_init_subrequest(r, sr) != NGX_OK) {
        goto failed_rf;
    }

    /*
     * The refresh has its own deadline, shorter than the lease, whatever
     * timeouts the token location sets: the lease must never expire while
     * its refresh is still in flight.
     */

    ev = &rf->deadline;
    ev->handler = ngx_http_tokenrefresh_deadline;
    ev->data = r->connection;
    ev->log = r->connection->log;

    ngx_add_timer(ev, tlcf->refresh_timeout);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tokenrefresh: %s of credential \"%V\" started, "
                   "lease %ui",
                   ngx_http_tokenrefresh_grant_names[rf->grant],
                   &rf->name, rf->lease_seq);

    return NGX_OK;

failed_rf:

    rf->done = 1;

    ngx_str_set(&reason, "the subrequest could not be created");

    ngx_http_tokenrefresh_fail(rf, NGX_HTTP_TOKENREFRESH_ABORTED, &reason,
                               r->connection->log);
    ngx_http_tokenrefresh_wake_local();

failed:

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "tokenrefresh: could not start a %s subrequest for "
                  "credential \"%V\"",
                  ngx_http_tokenrefresh_grant_names[res->grant], &ctx->name);

    return NGX_ERROR;
}


/*
 * A subrequest shares its parent's headers and body.  The token endpoint
 * must see neither the client's Authorization nor its cookies, so the
 * subrequest gets headers of its own: a form content type (which the
 * token location may override with proxy_set_header), and an empty body.
 * Token endpoints take POST (RFC 6749, section 3.2).
 */

static ngx_int_t
ngx_http_tokenrefresh_init_subrequest(ngx_http_request_t *r,
    ngx_http_request_t *sr)
{
    ngx_table_elt_t          *h;
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

    h = ngx_list_push(&sr->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Content-Type");
    ngx_str_set(&h->value, "application/x-www-form-urlencoded");
    h->lowcase_key = (u_char *) "content-type";

    sr->headers_in.content_type = h;

    h = ngx_list_push(&sr->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Accept");
    ngx_str_set(&h->value, "application/json");
    h->lowcase_key = (u_char *) "accept";

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

    u_char                          fp[NGX_HTTP_TOKENREFRESH_FP_LEN];
    u_char                          buf[NGX_MAX_ERROR_STR];
    ngx_int_t                       stored;
    ngx_log_t                      *log;
    ngx_str_t                       reason;
    ngx_uint_t                      outcome;
    const char                     *err;
    ngx_http_tokenrefresh_token_t   tok;

    if (rf->done) {
        /* a late call: the outcome was settled already (error page,
         * deadline) */
        return NGX_OK;
    }

    rf->done = 1;

    if (rf->deadline.timer_set) {
        ngx_del_timer(&rf->deadline);
    }

    log = sr->connection->log;

    reason.data = buf;
    reason.len = 0;

    outcome = ngx_http_tokenrefresh_outcome(rf, rc, &reason);

    if (outcome != NGX_HTTP_TOKENREFRESH_OK) {
        ngx_http_tokenrefresh_fail(rf, outcome, &reason, log);

        /* a refused refresh token is not sent again after a restart */

        if (outcome == NGX_HTTP_TOKENREFRESH_REFUSED
            && rf->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH
            && rf->zone->state)
        {
            (void) ngx_http_tokenrefresh_state_save(rf->zone, log);
        }

        goto done;
    }

    err = ngx_http_tokenrefresh_parse_response(sr->pool, rf->body->pos,
                                   rf->body->last - rf->body->pos,
                                   ngx_http_tokenrefresh_resolve_format(sr, rf),
                                   rf->zone->max_token_size,
                                   ngx_http_tokenrefresh_now(), &tok);
    if (err) {
        reason.len = ngx_snprintf(buf, sizeof(buf),
                                  "invalid token response: %s", err)
                     - buf;

        /*
         * A provider that rotates refresh tokens has spent the one we sent
         * as soon as it answered: a valid successor is kept even if the
         * rest of the answer is not.
         */

        if (tok.refresh_token.len
            && rf->grant == NGX_HTTP_TOKENREFRESH_GRANT_REFRESH)
        {
            tok.access_token.len = 0;

            if (ngx_http_tokenrefresh_store(rf, &tok, log) == NGX_OK
                && rf->zone->state)
            {
                (void) ngx_http_tokenrefresh_state_save(rf->zone, log);
            }
        }

        ngx_http_tokenrefresh_fail(rf, NGX_HTTP_TOKENREFRESH_BAD, &reason,
                                   log);
        goto done;
    }

    stored = ngx_http_tokenrefresh_store(rf, &tok, log);

    if (stored != NGX_OK) {
        if (stored == NGX_DECLINED) {
            ngx_str_set(&reason, "the credential was evicted");

        } else {
            ngx_str_set(&reason, "the zone is full");
        }

        ngx_http_tokenrefresh_fail(rf, NGX_HTTP_TOKENREFRESH_BAD, &reason,
                                   log);
        goto done;
    }

    /* the new tokens are on disk before another refresh may start */

    if (rf->zone->state) {
        (void) ngx_http_tokenrefresh_state_save(rf->zone, log);
    }

    ngx_http_tokenrefresh_release(rf);

    ngx_http_tokenrefresh_fingerprint(fp, tok.access_token.data,
                                      tok.access_token.len);

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "tokenrefresh: %s of credential \"%V\" succeeded in "
                  "%M ms, token %*s, expires in %L s%s",
                  ngx_http_tokenrefresh_grant_names[rf->grant],
                  &rf->name, ngx_current_msec - rf->start,
                  (size_t) NGX_HTTP_TOKENREFRESH_FP_LEN, fp,
                  (tok.expires - tok.issued) / 1000,
                  tok.refresh_token.len ? ", new refresh token" : "");

done:

    ngx_http_tokenrefresh_wake_local();

    /*
     * the response was consumed here; an error status must not make
     * nginx generate an error page for it, nor terminate the request
     * that started the refresh
     */

    return NGX_OK;
}


/* judges the answer; the reason goes into one log line, never its bytes */

static ngx_uint_t
ngx_http_tokenrefresh_outcome(ngx_http_tokenrefresh_refresh_t *rf,
    ngx_int_t rc, ngx_str_t *reason)
{
    u_char  *p, *last;

    p = reason->data;
    last = p + NGX_MAX_ERROR_STR;

    if (rf->status == 0) {

        /* no answer at all: the upstream module logged why */

        if (rc == NGX_HTTP_GATEWAY_TIME_OUT) {
            p = ngx_slprintf(p, last, "the token endpoint timed out");
            reason->len = p - reason->data;
            return NGX_HTTP_TOKENREFRESH_TIMEDOUT;
        }

        p = ngx_slprintf(p, last, "no answer from the token endpoint (%i)",
                         rc);
        reason->len = p - reason->data;
        return NGX_HTTP_TOKENREFRESH_BAD;
    }

    if (rf->status == NGX_HTTP_BAD_REQUEST
        || rf->status == NGX_HTTP_UNAUTHORIZED)
    {
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
    ngx_http_tokenrefresh_format_t     *f, *t, *u;
    ngx_http_tokenrefresh_main_conf_t  *tmcf;
    ngx_http_tokenrefresh_loc_conf_t   *tlcf;

    f = &rf->format;

    if (rf->format_set) {
        return f;
    }

    rf->format_set = 1;

    tlcf = ngx_http_get_module_loc_conf(sr, ngx_http_tokenrefresh_module);
    tmcf = ngx_http_get_module_main_conf(sr, ngx_http_tokenrefresh_module);

    t = &tlcf->format;
    u = &rf->lcf->format;

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

    return f;
}


static void
ngx_http_tokenrefresh_deadline(ngx_event_t *ev)
{
    u_char                            buf[NGX_MAX_ERROR_STR];
    ngx_str_t                         reason;
    ngx_connection_t                 *c;
    ngx_http_request_t               *sr;
    ngx_http_upstream_t              *u;
    ngx_http_tokenrefresh_refresh_t  *rf;

    rf = (ngx_http_tokenrefresh_refresh_t *)
             ((u_char *) ev - offsetof(ngx_http_tokenrefresh_refresh_t,
                                       deadline));

    if (rf->done) {
        return;
    }

    rf->done = 1;

    sr = rf->request;
    c = sr->connection;

    reason.data = buf;
    reason.len = ngx_snprintf(buf, sizeof(buf), "no answer from the token "
                              "endpoint within %M ms",
                              rf->lcf->refresh_timeout)
                 - buf;

    ngx_http_tokenrefresh_fail(rf, NGX_HTTP_TOKENREFRESH_TIMEDOUT, &reason,
                               c->log);
    ngx_http_tokenrefresh_wake_local();

    /*
     * stop the subrequest the way nginx does when the client request is
     * finalized under it: its upstream cleanup closes the connection to
     * the token endpoint and finalizes the subrequest
     */

    u = sr->upstream;

    if (u && u->cleanup) {
        (*u->cleanup)(sr);
        ngx_http_run_posted_requests(c);
    }
}


static void
ngx_http_tokenrefresh_refresh_cleanup(void *data)
{
    ngx_http_tokenrefresh_refresh_t *rf = data;

    static ngx_str_t  reason = ngx_string("the request that drove it was "
                                          "finalized");

    if (rf->deadline.timer_set) {
        ngx_del_timer(&rf->deadline);
    }

    if (rf->done) {
        return;
    }

    /* the request that drove the refresh is gone: let a waiter take over */

    rf->done = 1;

    ngx_http_tokenrefresh_fail(rf, NGX_HTTP_TOKENREFRESH_ABORTED, &reason,
                               ngx_cycle->log);
    ngx_http_tokenrefresh_wake_local();
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

    ngx_http_tokenrefresh_retry_after(r, rf);

    fmt = ngx_http_tokenrefresh_resolve_format(r, rf);

    if (r->headers_out.content_length_n > (off_t) fmt->max_response_size) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: token response of %O bytes for "
                      "credential \"%V\" exceeds "
                      "tokenrefresh_max_response_size %uz",
                      r->headers_out.content_length_n, &rf->name,
                      fmt->max_response_size);
        rf->too_big = 1;
        return NGX_ERROR;
    }

    /* the response ends here: nothing of it goes to the client */

    r->header_sent = 1;

    return NGX_OK;
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
    size_t                             want;
    size_t                             max;
    ssize_t                            n;
    ngx_buf_t                         *nb;

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

    if (rf->body == NULL) {
        rf->body = ngx_create_temp_buf(r->pool, ngx_min(4096, max));
        if (rf->body == NULL) {
            return NGX_ERROR;
        }
    }

    if (size > (off_t) (max - (rf->body->last - rf->body->pos))) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: token response for credential \"%V\" "
                      "exceeds tokenrefresh_max_response_size %uz",
                      &rf->name, max);
        rf->too_big = 1;
        return NGX_ERROR;
    }

    if (size > rf->body->end - rf->body->last) {

        /* grow by doubling: a token response is a few kilobytes */

        want = 2 * (rf->body->end - rf->body->start);

        while (want < (size_t) (rf->body->last - rf->body->pos + size)) {
            want *= 2;
        }

        want = ngx_min(want, max);

        nb = ngx_create_temp_buf(r->pool, want);
        if (nb == NULL) {
            return NGX_ERROR;
        }

        nb->last = ngx_cpymem(nb->pos, rf->body->pos,
                              rf->body->last - rf->body->pos);
        rf->body = nb;
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
                      &rf->name);
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
