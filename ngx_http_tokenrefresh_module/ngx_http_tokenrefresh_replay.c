
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * Recovering from a rejected token: when the upstream answers 401 (or
 * another configured status) to a request that carried a token of ours,
 * nothing of that answer reaches the client.  The upstream is detached,
 * and the request goes again *as it was sent the first time*: in the same
 * location (a named one too), with the same request line, arguments,
 * headers but Authorization, method and body, and without running
 * rewrite, access (auth_request), try_files or mirror again.  An internal
 * redirect would run every rewrite of the location a second time and
 * decode the URI; instead the phase engine resumes at the module's own
 * attach step, which waits for the one refresh and then goes straight to
 * the content phase.  A request is replayed at most once: a second
 * rejection reaches the client unchanged.
 *
 * A rejection is recorded (the token marked rejected, one refresh) even
 * when the request cannot go again: a streamed body, a method the
 * location does not replay, an error_page that intercepted the answer.
 */


#include "ngx_http_tokenrefresh_module.h"


static ngx_int_t ngx_http_tokenrefresh_replay_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_replay(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_upstream_t *u);
static void ngx_http_tokenrefresh_unused(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx);
static ngx_uint_t ngx_http_tokenrefresh_is_rejected(
    ngx_http_tokenrefresh_loc_conf_t *tlcf, ngx_uint_t status);
static ngx_uint_t ngx_http_tokenrefresh_body_replayable(
    ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_int_t
ngx_http_tokenrefresh_replay_filter(ngx_http_request_t *r)
{
    ngx_uint_t                         status, level;
    const char                        *why;
    ngx_http_upstream_t               *u;
    ngx_http_tokenrefresh_ctx_t       *ctx;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    u = r->upstream;

    /*
     * only the upstream's own answer to a client request that carried our
     * token: u->cleanup is set while ngx_http_upstream_send_response() has
     * not sent anything yet, and is gone for error pages made afterwards
     */

    if (r != r->main || u == NULL || u->cleanup == NULL) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_tokenrefresh_module);

    if (ctx == NULL || !ctx->attached) {
        return ngx_http_next_header_filter(r);
    }

    if (!ctx->sent) {
        if (u->request_sent) {
            ngx_http_tokenrefresh_unused(r, ctx);
        }

        return ngx_http_next_header_filter(r);
    }

    if (ctx->upstream != u) {
        return ngx_http_next_header_filter(r);
    }

    tlcf = ctx->lcf;

    /* headers_out.status may have been replaced from r->err_status */
    status = u->headers_in.status_n;

    if (!ngx_http_tokenrefresh_is_rejected(tlcf, status)) {
        return ngx_http_next_header_filter(r);
    }

    ctx->recorded = 1;

    why = NULL;

    if (ctx->replayed) {
        why = "it was sent again already";

    } else if (!tlcf->replay) {
        why = "tokenrefresh_replay is off";

    } else if (!(tlcf->replay_methods & r->method)) {
        why = "tokenrefresh_replay_methods";

    } else if (!ngx_http_tokenrefresh_body_replayable(r)) {
        why = "the request body was streamed to it (proxy_request_buffering "
              "off) and cannot be sent again";

    } else if (ngx_http_tokenrefresh_phase == NGX_CONF_UNSET_UINT) {
        why = "the attach step is not in the phase engine";
    }

    if (why) {
        (void) ngx_http_tokenrefresh_reject(ctx, tlcf, 0,
                                            r->connection->log);

        level = ctx->replayed ? NGX_LOG_INFO : NGX_LOG_WARN;

        ngx_log_error(level, r->connection->log, 0,
                      "tokenrefresh: the upstream rejected %sthe token of "
                      "credential \"%V\" with status %ui; the request is "
                      "not replayed: %s, passing the answer to the client",
                      ctx->replayed ? "again " : "", &ctx->log_name, status,
                      why);

        return ngx_http_next_header_filter(r);
    }

    (void) ngx_http_tokenrefresh_reject(ctx, tlcf, 1, r->connection->log);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tokenrefresh: token of credential \"%V\" rejected "
                   "with status %ui, replaying in place",
                   &ctx->log_name, status);

    return ngx_http_tokenrefresh_replay(r, ctx, u);
}


static ngx_int_t
ngx_http_tokenrefresh_replay(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_upstream_t *u)
{
    ctx->replayed = 1;
    ctx->replaying = 1;
    ctx->outcome = NGX_HTTP_TOKENREFRESH_R_REPLAYED;

    /*
     * Detach the upstream as ngx_http_upstream_create() does before
     * reusing a request: its cleanup finalizes the upstream part with
     * NGX_DONE (which gives back one reference, taken here) and frees the
     * connection to the keepalive cache only if the answer was read
     * completely, else closes it.
     */

    r->main->count++;

    (*u->cleanup)(r);

    ngx_http_clean_header(r);

    /* what this pass of the module had, and what the 401 set */

    ctx->attached = 0;
    ctx->sent = 0;
    ctx->recorded = 0;
    ctx->upstream = NULL;
    ctx->token.len = 0;

    r->limit_rate = ctx->limit_rate;
    r->limit_rate_set = ctx->limit_rate_set;

    /*
     * The request resumes at the attach step from the posted requests,
     * not here, with the old upstream's code still on the stack.  It
     * holds a reference until then: the one that
     * ngx_http_upstream_send_response() gives back when this filter
     * returns NGX_ERROR with u->cleanup unset.  The posted request's
     * memory is the context's, so that posting cannot fail.
     */

    r->main->count++;

    r->phase_handler = ngx_http_tokenrefresh_phase;
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    (void) ngx_http_post_request(r, &ctx->posted);

    return NGX_ERROR;
}


/*
 * A rejection that no header filter saw: with proxy_intercept_errors and
 * an error_page for the status, the upstream module finalizes before any
 * header is sent and goes to the error page.  The request still knows the
 * upstream that got the token, and what it answered, when it is freed
 * (its context is kept for that, see ngx_http_tokenrefresh_sent()): the
 * next request gets a new token.  Also called when such a request starts
 * a new pass in a location of the module (the error page's).
 */

void
ngx_http_tokenrefresh_record(ngx_http_tokenrefresh_ctx_t *ctx)
{
    ngx_uint_t            status;
    ngx_http_upstream_t  *u;

    u = ctx->upstream;

    if (u == NULL || !ctx->sent || ctx->recorded) {
        return;
    }

    status = u->headers_in.status_n;

    if (!ngx_http_tokenrefresh_is_rejected(ctx->lcf, status)) {
        return;
    }

    ctx->recorded = 1;

    (void) ngx_http_tokenrefresh_reject(ctx, ctx->lcf, 0,
                                        ctx->request->connection->log);

    ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                  "tokenrefresh: the upstream rejected the token of "
                  "credential \"%V\" with status %ui, and its answer was "
                  "intercepted by an error_page, it is not replayed",
                  &ctx->log_name, status);
}


/*
 * The module attached a token, and the request went to the upstream
 * without any token variable: a proxy_set_header of the location replaces
 * every inherited one, the Authorization header too.  Said once per
 * location and worker.
 */

static void
ngx_http_tokenrefresh_unused(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx)
{
    ngx_http_core_loc_conf_t  *clcf;

    if (ctx->lcf->warned_unused) {
        return;
    }

    ctx->lcf->warned_unused = 1;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "tokenrefresh: credential \"%V\" was attached in location "
                  "\"%V\", but there was no token variable in the request "
                  "to the upstream: a proxy_set_header of the location "
                  "replaces every inherited one",
                  &ctx->log_name, &clcf->name);
}


static ngx_uint_t
ngx_http_tokenrefresh_is_rejected(ngx_http_tokenrefresh_loc_conf_t *tlcf,
    ngx_uint_t status)
{
    ngx_uint_t  i, *s;

    if (tlcf->rejected == NULL) {
        return status == NGX_HTTP_UNAUTHORIZED;
    }

    s = tlcf->rejected->elts;

    for (i = 0; i < tlcf->rejected->nelts; i++) {
        if (s[i] == status) {
            return 1;
        }
    }

    return 0;
}


/*
 * A buffered body (in memory or in a client temp file) is still there to
 * send again, as proxy_next_upstream sends it; one that was streamed to
 * the upstream as it arrived is not (grpc_pass streams every body it has
 * not read in full before the request started).
 */

static ngx_uint_t
ngx_http_tokenrefresh_body_replayable(ngx_http_request_t *r)
{
    if (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked) {
        return 1;
    }

    return !r->request_body_no_buffering && !r->reading_body;
}


ngx_int_t
ngx_http_tokenrefresh_replay_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_tokenrefresh_replay_filter;

    return NGX_OK;
}
