
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * A user's login, captured: the app's login request goes to the backend
 * unchanged; a 2xx answer with valid tokens is held here (its header until
 * the last buffer, as image_filter does), becomes a session in the zone,
 * and reaches the app without the tokens, with the session's handle
 * instead.  Any other answer passes through untouched and creates nothing.
 * A compressed answer cannot be read: it is refused rather than passed on
 * with the tokens in it (the login location sends no Accept-Encoding).
 */


#include "ngx_http_tokenrefresh_module.h"


typedef struct {
    ngx_buf_t                        *body;
    ngx_http_tokenrefresh_format_t    format;
    unsigned                          done:1;
    unsigned                          failed:1;
} ngx_http_tokenrefresh_capture_t;


static ngx_http_tokenrefresh_capture_t *ngx_http_tokenrefresh_capture_of(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_capture_header_filter(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_capture_body_filter(
    ngx_http_request_t *r, ngx_chain_t *in);
static ngx_int_t ngx_http_tokenrefresh_capture_read(ngx_http_request_t *r,
    ngx_http_tokenrefresh_capture_t *cp, ngx_buf_t *b);
static ngx_int_t ngx_http_tokenrefresh_capture_end(ngx_http_request_t *r,
    ngx_http_tokenrefresh_capture_t *cp);
static ngx_int_t ngx_http_tokenrefresh_capture_session(ngx_http_request_t *r,
    ngx_http_tokenrefresh_capture_t *cp, ngx_str_t *body);
static void ngx_http_tokenrefresh_capture_nocache(ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_capture_keep(ngx_http_request_t *r,
    ngx_http_tokenrefresh_loc_conf_t *tlcf, ngx_str_t *kept);
static ngx_int_t ngx_http_tokenrefresh_capture_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_str_t  ngx_http_tokenrefresh_unavailable =
    ngx_string("{\"error\":\"temporarily_unavailable\"}\n");

static ngx_str_t  ngx_http_tokenrefresh_bad_gateway =
    ngx_string("{\"error\":\"bad_gateway\"}\n");


ngx_int_t
ngx_http_tokenrefresh_capture_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_tokenrefresh_capture_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_tokenrefresh_capture_body_filter;

    return NGX_OK;
}


static ngx_http_tokenrefresh_capture_t *
ngx_http_tokenrefresh_capture_of(ngx_http_request_t *r)
{
    ngx_http_tokenrefresh_ctx_t  *ctx;

    if (r != r->main) {
        return NULL;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_tokenrefresh_module);

    return ctx ? ctx->capture : NULL;
}


static ngx_int_t
ngx_http_tokenrefresh_capture_header_filter(ngx_http_request_t *r)
{
    ngx_http_tokenrefresh_ctx_t       *ctx;
    ngx_http_tokenrefresh_capture_t   *cp;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    if (r != r->main
        || r->headers_out.status < 200 || r->headers_out.status > 299
        || r->header_only)
    {
        return ngx_http_next_header_filter(r);
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    if (tlcf->session != NGX_HTTP_TOKENREFRESH_SESSION_LOGIN
        || ngx_http_get_module_ctx(r, ngx_http_tokenrefresh_module))
    {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_tokenrefresh_ctx_t));
    cp = ngx_pcalloc(r->pool, sizeof(ngx_http_tokenrefresh_capture_t));

    if (ctx == NULL || cp == NULL) {
        return NGX_ERROR;
    }

    ctx->request = r;
    ctx->capture = cp;

    ngx_http_set_ctx(r, ctx, ngx_http_tokenrefresh_module);

    ngx_http_tokenrefresh_format(r, &tlcf->format, &tlcf->format,
                                 &cp->format);

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->value.len)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: a compressed login answer (%V) cannot "
                      "be read, refused; send the login without "
                      "Accept-Encoding (proxy_set_header Accept-Encoding "
                      "\"\")", &r->headers_out.content_encoding->value);
        cp->failed = 1;
    }

    if (r->headers_out.content_length_n > (off_t) cp->format.max_response_size)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: a login answer of %O bytes exceeds "
                      "tokenrefresh_max_response_size %uz, refused",
                      r->headers_out.content_length_n,
                      cp->format.max_response_size);
        cp->failed = 1;
    }

    /* the header waits for the body: it may change */

    r->filter_need_in_memory = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_capture_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in)
{
    ngx_chain_t                      *cl;
    ngx_http_tokenrefresh_capture_t  *cp;

    cp = ngx_http_tokenrefresh_capture_of(r);

    if (cp == NULL || cp->done) {
        return ngx_http_next_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {

        if (!cp->failed
            && ngx_http_tokenrefresh_capture_read(r, cp, cl->buf) != NGX_OK)
        {
            cp->failed = 1;
        }

        /* consumed: what the app gets is made at the end */

        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;

        if (cl->buf->last_buf) {
            cp->done = 1;
            return ngx_http_tokenrefresh_capture_end(r, cp);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_capture_read(ngx_http_request_t *r,
    ngx_http_tokenrefresh_capture_t *cp, ngx_buf_t *b)
{
    size_t     size, max;
    ngx_int_t  rc;

    if (!ngx_buf_in_memory(b)) {
        return b->in_file ? NGX_ERROR : NGX_OK;
    }

    size = b->last - b->pos;

    if (size == 0) {
        return NGX_OK;
    }

    max = cp->format.max_response_size;

    rc = ngx_http_tokenrefresh_room_for(r->pool, &cp->body, size, max);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: a login answer exceeds "
                      "tokenrefresh_max_response_size %uz, refused", max);
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    cp->body->last = ngx_cpymem(cp->body->last, b->pos, size);

    return NGX_OK;
}


/*
 * The whole answer is here.  Not a token answer: it goes on as it came,
 * except when it could not be read at all (compressed, too big), which
 * is a 502, since it may carry tokens.
 */

static ngx_int_t
ngx_http_tokenrefresh_capture_end(ngx_http_request_t *r,
    ngx_http_tokenrefresh_capture_t *cp)
{
    ngx_str_t  body;

    if (cp->failed) {
        return ngx_http_tokenrefresh_capture_send(r, NGX_HTTP_BAD_GATEWAY,
                                         &ngx_http_tokenrefresh_bad_gateway);
    }

    if (cp->body) {
        body.data = cp->body->pos;
        body.len = cp->body->last - cp->body->pos;

    } else {
        ngx_str_null(&body);
    }

    return ngx_http_tokenrefresh_capture_session(r, cp, &body);
}


static ngx_int_t
ngx_http_tokenrefresh_capture_session(ngx_http_request_t *r,
    ngx_http_tokenrefresh_capture_t *cp, ngx_str_t *body)
{
    u_char                                 digest
                                             [NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    u_char                                 subject
                                             [NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    u_char                                 label
                                              [NGX_HTTP_TOKENREFRESH_LABEL_LEN];
    ngx_str_t                              handle, out, sub, kept, name;
    ngx_str_t                              v;
    const char                            *err;
    ngx_http_tokenrefresh_zone_t          *zone;
    ngx_http_tokenrefresh_token_t          tok;
    ngx_http_tokenrefresh_pointer_t       *drop[2];
    ngx_http_tokenrefresh_loc_conf_t      *tlcf;
    ngx_http_tokenrefresh_session_conf_t  *sc;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);
    sc = &tlcf->session_conf;
    zone = tlcf->session_zone->data;

    err = body->len ? ngx_http_tokenrefresh_parse_response(r->pool,
                          body->data, body->len, &cp->format,
                          zone->max_token_size, ngx_http_tokenrefresh_now(),
                          &tok)
                    : "an empty answer";

    if (err == NULL && tok.expires <= ngx_http_tokenrefresh_now()) {
        err = "the token has expired already";
    }

    if (err) {
        /* a login that did not give tokens: the app sees it as it was */

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "tokenrefresh: a login answer with no session in it "
                      "(%s), passed on", err);

        return ngx_http_tokenrefresh_capture_send(r, 0, body);
    }

    drop[0] = cp->format.access;
    drop[1] = cp->format.refresh;

    if (ngx_http_tokenrefresh_session_new(r->pool, &handle, digest)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    switch (ngx_http_tokenrefresh_rewrite(r->pool, body, drop, 2,
                                          &sc->handle_json, &handle, &out))
    {
    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: a login answer that is not a JSON "
                      "object cannot carry the session handle, refused");
        return ngx_http_tokenrefresh_capture_send(r, NGX_HTTP_BAD_GATEWAY,
                                         &ngx_http_tokenrefresh_bad_gateway);
    default:
        return NGX_ERROR;
    }

    ngx_memzero(subject, sizeof(subject));

    if (ngx_http_tokenrefresh_jwt_subject(r->pool, &tok.access_token, &sub)
        == NGX_OK)
    {
        ngx_http_tokenrefresh_digest(subject, sub.data, sub.len);
    }

    if (ngx_http_tokenrefresh_capture_keep(r, tlcf, &kept) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_tokenrefresh_superseded(zone)) {

        /*
         * a reload that resized the zone committed while this login was
         * at the backend: a session made in this zone would be unknown to
         * the new workers; the app logs in again, there
         */

        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "tokenrefresh: a login answered while a reload "
                      "replaced zone \"%V\" is refused with 503",
                      &zone->shm_zone->shm.name);

        (void) ngx_http_tokenrefresh_set_retry_after(r, 1000);

        return ngx_http_tokenrefresh_capture_send(r,
                                           NGX_HTTP_SERVICE_UNAVAILABLE,
                                           &ngx_http_tokenrefresh_unavailable);
    }

    if (ngx_http_tokenrefresh_session_create(zone, digest, &tok, subject,
                                             &kept, 0, 0, r->connection->log)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: zone \"%V\" is full, no room for a new "
                      "session; the login is refused with 503",
                      &zone->shm_zone->shm.name);

        (void) ngx_http_tokenrefresh_set_retry_after(r, 1000);

        return ngx_http_tokenrefresh_capture_send(r,
                                           NGX_HTTP_SERVICE_UNAVAILABLE,
                                           &ngx_http_tokenrefresh_unavailable);
    }

    if (zone->state) {
        /* the answer does not wait for the disk: a lost login costs a login */

        name.data = digest;
        name.len = NGX_HTTP_TOKENREFRESH_DIGEST_LEN;

        (void) ngx_http_tokenrefresh_journal_put(zone, &name, 1, NULL, NULL,
                                                 NULL, r->connection->log);
    }

    /* and on every node of a fleet */
    ngx_http_tokenrefresh_fleet_session_new(zone, digest);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "tokenrefresh: %*s created by a login, expires in %L s",
                  (size_t) (ngx_http_tokenrefresh_session_label(label, digest)
                            - label),
                  label, (tok.expires - tok.issued) / 1000);

    if (ngx_http_tokenrefresh_session_cookie(r, sc, &handle) != NGX_OK) {
        return NGX_ERROR;
    }

    /* an answer with a credential in it is nobody's to keep */

    ngx_http_tokenrefresh_capture_nocache(r);

    ngx_str_set(&v, "no-store");

    if ((sc->handle_header.len
         && ngx_http_tokenrefresh_add_header_out(r,
                                       (char *) sc->handle_header.data,
                                       &handle)
            != NGX_OK)
        || ngx_http_tokenrefresh_add_header_out(r, "Cache-Control", &v)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_tokenrefresh_capture_send(r, 0, &out);
}


/* the backend's Cache-Control and Expires go: "no-store" replaces them */

static void
ngx_http_tokenrefresh_capture_nocache(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if ((h[i].key.len == sizeof("Cache-Control") - 1
             && ngx_strncasecmp(h[i].key.data, (u_char *) "Cache-Control",
                                h[i].key.len)
                == 0)
            || (h[i].key.len == sizeof("Expires") - 1
                && ngx_strncasecmp(h[i].key.data, (u_char *) "Expires",
                                   h[i].key.len)
                   == 0))
        {
            h[i].hash = 0;
        }
    }

    r->headers_out.expires = NULL;
}


/* tokenrefresh_session_keep values: { u8 len, name, u16 len, value } */

static ngx_int_t
ngx_http_tokenrefresh_capture_keep(ngx_http_request_t *r,
    ngx_http_tokenrefresh_loc_conf_t *tlcf, ngx_str_t *kept)
{
    u_char                        *p;
    size_t                         len;
    ngx_str_t                     *values;
    ngx_uint_t                     i;
    ngx_http_tokenrefresh_keep_t  *k;

    ngx_str_null(kept);

    if (tlcf->keep == NULL) {
        return NGX_OK;
    }

    k = tlcf->keep->elts;

    values = ngx_palloc(r->pool, tlcf->keep->nelts * sizeof(ngx_str_t));
    if (values == NULL) {
        return NGX_ERROR;
    }

    len = 0;

    for (i = 0; i < tlcf->keep->nelts; i++) {
        if (ngx_http_complex_value(r, &k[i].value, &values[i]) != NGX_OK) {
            return NGX_ERROR;
        }

        /* a value too long to keep is kept cut, and said */

        if (values[i].len > 1024) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "tokenrefresh: tokenrefresh_session_keep \"%V\" "
                          "is longer than 1024 bytes, cut", &k[i].name);
            values[i].len = 1024;
        }

        len += 1 + k[i].name.len + 2 + values[i].len;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    kept->data = p;
    kept->len = len;

    for (i = 0; i < tlcf->keep->nelts; i++) {
        *p++ = (u_char) k[i].name.len;
        p = ngx_cpymem(p, k[i].name.data, k[i].name.len);
        *p++ = (u_char) (values[i].len >> 8);
        *p++ = (u_char) values[i].len;
        p = ngx_cpymem(p, values[i].data, values[i].len);
    }

    return NGX_OK;
}


/* a kept value by name, for $tokenrefresh_kept_NAME */

ngx_int_t
ngx_http_tokenrefresh_kept_value(ngx_str_t *kept, ngx_str_t *name,
    ngx_str_t *value)
{
    u_char  *p, *last;
    size_t   nlen, vlen;

    p = kept->data;
    last = p + kept->len;

    while (p < last) {
        nlen = *p++;

        if ((size_t) (last - p) < nlen + 2) {
            break;
        }

        vlen = (p[nlen] << 8) | p[nlen + 1];

        if ((size_t) (last - p) < nlen + 2 + vlen) {
            break;
        }

        if (nlen == name->len && ngx_strncmp(p, name->data, nlen) == 0) {
            value->data = p + nlen + 2;
            value->len = vlen;
            return NGX_OK;
        }

        p += nlen + 2 + vlen;
    }

    return NGX_DECLINED;
}


/* status 0: the backend's status and headers, with this body */

static ngx_int_t
ngx_http_tokenrefresh_capture_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (status) {
        r->headers_out.status = status;
        r->headers_out.status_line.len = 0;

        ngx_str_set(&r->headers_out.content_type, "application/json");
        r->headers_out.content_type_len = r->headers_out.content_type.len;
        r->headers_out.content_type_lowcase = NULL;
        r->headers_out.charset.len = 0;

        if (r->headers_out.content_encoding) {
            r->headers_out.content_encoding->hash = 0;
            r->headers_out.content_encoding = NULL;
        }
    }

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);
    ngx_http_clear_etag(r);
    ngx_http_clear_last_modified(r);

    r->headers_out.content_length_n = body->len;

    rc = ngx_http_next_header_filter(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (body->len) {
        b->pos = body->data;
        b->last = body->data + body->len;
        b->memory = 1;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}
