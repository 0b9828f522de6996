
/*
 * Copyright (C) ngx_http_tokenrefresh_module authors
 *
 * Recovering from a rejected token: when the upstream answers 401 (or
 * another configured status) to a request that carried a token of ours,
 * nothing of that answer reaches the client.  The upstream is detached,
 * and the request goes through its location again (an internal redirect
 * to the same URI, with its body), where the attach step gives it the
 * token stored meanwhile, or waits for the one refresh.  A request is
 * replayed at most once: a second rejection reaches the client unchanged.
 */


#include "ngx_http_tokenrefresh_module.h"


static ngx_int_t ngx_http_tokenrefresh_replay_filter(ngx_http_request_t *r);
static ngx_uint_t ngx_http_tokenrefresh_is_rejected(
    ngx_http_tokenrefresh_loc_conf_t *tlcf, ngx_uint_t status);
static ngx_uint_t ngx_http_tokenrefresh_body_replayable(
    ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_int_t
ngx_http_tokenrefresh_replay_filter(ngx_http_request_t *r)
{
    ngx_uint_t                         status, what;
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

    if (ctx == NULL || !ctx->attached || !ctx->sent) {
        return ngx_http_next_header_filter(r);
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    /* headers_out.status may have been replaced from r->err_status */
    status = u->headers_in.status_n;

    if (!ngx_http_tokenrefresh_is_rejected(tlcf, status)) {
        ngx_http_tokenrefresh_accepted(ctx);
        return ngx_http_next_header_filter(r);
    }

    if (!tlcf->replay) {
        return ngx_http_next_header_filter(r);
    }

    if (ctx->replayed) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "tokenrefresh: the upstream rejected the token of "
                      "credential \"%V\" again with status %ui, passing it "
                      "to the client", &ctx->name, status);

        return ngx_http_next_header_filter(r);
    }

    if (!ngx_http_tokenrefresh_body_replayable(r)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "tokenrefresh: the upstream rejected the token of "
                      "credential \"%V\" with status %ui, but the request "
                      "body was streamed to it (proxy_request_buffering "
                      "off) and cannot be sent again, passing the answer "
                      "to the client", &ctx->name, status);

        return ngx_http_next_header_filter(r);
    }

    /* the context must be found again after the internal redirect */

    if (ngx_http_tokenrefresh_keep_ctx(r, ctx) != NGX_OK) {
        return ngx_http_next_header_filter(r);
    }

    what = ngx_http_tokenrefresh_reject(ctx, tlcf, r->connection->log);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "tokenrefresh: token of credential \"%V\" rejected "
                   "with status %ui, replaying (%ui)",
                   &ctx->name, status, what);

    ctx->replayed = 1;
    ctx->outcome = NGX_HTTP_TOKENREFRESH_R_REPLAYED;

    /*
     * Detach the upstream as ngx_http_upstream_create() does before
     * reusing a request: its cleanup finalizes the upstream part with
     * NGX_DONE (which takes one reference) and frees the connection to
     * the keepalive cache only if the answer was read completely, else
     * closes it.  The internal redirect takes a reference of its own, which
     * ngx_http_upstream_send_response() gives back when this filter returns
     * NGX_ERROR with u->cleanup unset.
     */

    r->main->count++;

    (*u->cleanup)(r);

    ngx_http_clean_header(r);

    (void) ngx_http_internal_redirect(r, &r->uri, &r->args);

    return NGX_ERROR;
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
 * send again; one that was streamed to the upstream as it arrived is not.
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
