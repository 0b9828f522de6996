
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * Users' sessions, the HTTP side: the handle a request carries (a header
 * for native apps, a cookie for browsers), the rule that keeps other
 * sites from using a browser's cookie (CSRF), the one answer an app gets
 * when its session is over, and the logout location.
 *
 * A handle is 256 random bits; the zone knows only the digest of it, and
 * a handle the zone does not know ends here, with no call anywhere.  The
 * handle is never logged: a session is named by its digest.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>


typedef struct {
    ngx_http_tokenrefresh_zone_t     *zone;
    ngx_str_t                         refresh_token;
    ngx_str_t                         kept;
    ngx_http_post_subrequest_t        ps;
    ngx_uint_t                        status;
    unsigned                          revoked:1;
} ngx_http_tokenrefresh_logout_t;


static ngx_int_t ngx_http_tokenrefresh_session_handle_of(
    ngx_http_request_t *r, ngx_http_tokenrefresh_session_conf_t *sc,
    ngx_str_t *handle, ngx_uint_t *cookie);
static ngx_int_t ngx_http_tokenrefresh_session_csrf(ngx_http_request_t *r,
    ngx_http_tokenrefresh_session_conf_t *sc);
static ngx_table_elt_t *ngx_http_tokenrefresh_header_in(
    ngx_http_request_t *r, char *lowcase, size_t len);
static u_char *ngx_http_tokenrefresh_session_memo(ngx_http_request_t *r,
    ngx_str_t *handle, u_char *digest);
static void ngx_http_tokenrefresh_memo_cleanup(void *data);
static ngx_int_t ngx_http_tokenrefresh_session_digest(ngx_str_t *handle,
    u_char *digest);
static ngx_int_t ngx_http_tokenrefresh_logout_handler(ngx_http_request_t *r);
static ngx_http_tokenrefresh_logout_t *ngx_http_tokenrefresh_get_logout(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_revoked(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static void ngx_http_tokenrefresh_logout_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_tokenrefresh_logout_answer(ngx_http_request_t *r);


/*
 * The last handle a client connection carried, and its digest: an app
 * sends its user's requests on its own keep-alive or HTTP/2 connection,
 * so the SHA-256 of the handle is made once per connection rather than
 * once per request.  It lives in the connection's pool, which holds the
 * request lines that carried the handle anyway, and is wiped when the
 * connection closes.
 */

typedef struct {
    u_char                           handle[NGX_HTTP_TOKENREFRESH_HANDLE_LEN];
    u_char                           digest[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    ngx_uint_t                       valid;
} ngx_http_tokenrefresh_memo_t;


static ngx_str_t  ngx_http_tokenrefresh_ended_body =
    ngx_string("{\"error\":\"session_ended\","
               "\"error_description\":\"the session has ended\"}\n");

static ngx_str_t  ngx_http_tokenrefresh_ended_auth =
    ngx_string("Bearer error=\"invalid_token\", "
               "error_description=\"the session has ended\"");


/*
 * The first pass of a request in a location that uses sessions: its
 * handle, found and checked.  NGX_OK: ctx names the session; NGX_DECLINED:
 * no session (the ended answer follows); or a status to answer with.
 */

ngx_int_t
ngx_http_tokenrefresh_session_pass(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx, ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    u_char                                *p;
    ngx_int_t                              rc;
    ngx_str_t                              handle;
    ngx_uint_t                             cookie;
    ngx_http_tokenrefresh_session_conf_t  *sc;

    sc = &tlcf->session_conf;

    ctx->session = 1;

    rc = ngx_http_tokenrefresh_session_handle_of(r, sc, &handle, &cookie);
    if (rc != NGX_OK) {
        return rc;
    }

    if (cookie) {
        rc = ngx_http_tokenrefresh_session_csrf(r, sc);
        if (rc != NGX_OK) {
            ctx->outcome = NGX_HTTP_TOKENREFRESH_R_DENIED;
            return rc;
        }
    }

    p = ngx_pnalloc(r->pool, NGX_HTTP_TOKENREFRESH_DIGEST_LEN
                             + NGX_HTTP_TOKENREFRESH_LABEL_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_tokenrefresh_session_memo(r, &handle, p) == NULL) {
        /* not a handle this module could have made */
        return NGX_DECLINED;
    }

    ctx->name.data = p;
    ctx->name.len = NGX_HTTP_TOKENREFRESH_DIGEST_LEN;
    ctx->hash = ngx_http_tokenrefresh_digest_key(p);

    ctx->log_name.data = p + NGX_HTTP_TOKENREFRESH_DIGEST_LEN;
    ctx->log_name.len = ngx_http_tokenrefresh_session_label(
                            ctx->log_name.data, p)
                        - ctx->log_name.data;

    return NGX_OK;
}


/* a header first (a native app's), then the cookie (a browser's) */

static ngx_int_t
ngx_http_tokenrefresh_session_handle_of(ngx_http_request_t *r,
    ngx_http_tokenrefresh_session_conf_t *sc, ngx_str_t *handle,
    ngx_uint_t *cookie)
{
    ngx_table_elt_t  *h;

    *cookie = 0;

    if (sc->header.len) {
        h = ngx_http_tokenrefresh_header_in(r, (char *) sc->header.data,
                                            sc->header.len);
        if (h) {
            *handle = h->value;
            return NGX_OK;
        }
    }

    if (sc->cookie.len) {
#if (nginx_version >= 1023000)
        if (ngx_http_parse_multi_header_lines(r, r->headers_in.cookie,
                                              &sc->cookie, handle)
            != NULL)
#else
        if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies,
                                              &sc->cookie, handle)
            != NGX_DECLINED)
#endif
        {
            *cookie = 1;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/*
 * A browser sends the cookie whoever made the request, so a request with
 * a cookie handle must show that it comes from the app: an Origin on the
 * list (or the request's own, without a list); without Origin, a method
 * that changes nothing, or the configured header, which a cross-site
 * form cannot set.  Sec-Fetch-Site: cross-site never passes.
 */

static ngx_int_t
ngx_http_tokenrefresh_session_csrf(ngx_http_request_t *r,
    ngx_http_tokenrefresh_session_conf_t *sc)
{
    u_char           *p;
    size_t            len;
    ngx_str_t        *o, own;
    ngx_uint_t        i, safe;
    ngx_table_elt_t  *origin, *site;

    origin = ngx_http_tokenrefresh_header_in(r, "origin", 6);

    if (origin && origin->value.len) {

        if (sc->origins) {
            o = sc->origins->elts;

            for (i = 0; i < sc->origins->nelts; i++) {
                if (o[i].len == origin->value.len
                    && ngx_strncasecmp(o[i].data, origin->value.data,
                                       o[i].len)
                       == 0)
                {
                    return NGX_OK;
                }
            }

        } else if (r->headers_in.host) {

#if (NGX_HTTP_SSL)
            own.data = (u_char *) (r->connection->ssl ? "https://"
                                                      : "http://");
#else
            own.data = (u_char *) "http://";
#endif
            own.len = ngx_strlen(own.data);
            len = own.len + r->headers_in.host->value.len;

            if (origin->value.len == len
                && ngx_strncasecmp(origin->value.data, own.data, own.len)
                   == 0)
            {
                p = origin->value.data + own.len;

                if (ngx_strncasecmp(p, r->headers_in.host->value.data,
                                    r->headers_in.host->value.len)
                    == 0)
                {
                    return NGX_OK;
                }
            }
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "tokenrefresh: a session cookie from an origin that "
                      "is not on tokenrefresh_session_origins, request "
                      "refused");

        return NGX_HTTP_FORBIDDEN;
    }

    site = ngx_http_tokenrefresh_header_in(r, "sec-fetch-site", 14);

    if (site && site->value.len == sizeof("cross-site") - 1
        && ngx_strncasecmp(site->value.data, (u_char *) "cross-site",
                           site->value.len)
           == 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "tokenrefresh: a session cookie in a cross-site "
                      "request, refused");
        return NGX_HTTP_FORBIDDEN;
    }

    safe = r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_OPTIONS);

    if (safe
        || (sc->csrf_header.len
            && ngx_http_tokenrefresh_header_in(r,
                                               (char *) sc->csrf_header.data,
                                               sc->csrf_header.len)))
    {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "tokenrefresh: a session cookie in a %V request with "
                  "neither Origin nor %s, refused", &r->method_name,
                  sc->csrf_header.len ? "the CSRF header"
                                      : "a tokenrefresh_session_csrf_header");

    return NGX_HTTP_FORBIDDEN;
}


static ngx_table_elt_t *
ngx_http_tokenrefresh_header_in(ngx_http_request_t *r, char *lowcase,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) lowcase, len) == 0)
        {
            return &h[i];
        }
    }
}


/* only what this module could have issued is looked up */

static u_char *
ngx_http_tokenrefresh_session_memo(ngx_http_request_t *r, ngx_str_t *handle,
    u_char *digest)
{
    ngx_connection_t              *c;
    ngx_pool_cleanup_t            *cln;
    ngx_http_tokenrefresh_memo_t  *memo;

    c = r->connection;

#if (NGX_HTTP_V2)
    if (r->stream) {
        c = r->stream->connection->connection;
    }
#endif

    for (cln = c->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_tokenrefresh_memo_cleanup) {
            break;
        }
    }

    memo = cln ? cln->data : NULL;

    if (memo && memo->valid
        && handle->len == NGX_HTTP_TOKENREFRESH_HANDLE_LEN
        && CRYPTO_memcmp(memo->handle, handle->data, handle->len) == 0)
    {
        return ngx_cpymem(digest, memo->digest,
                          NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    if (ngx_http_tokenrefresh_session_digest(handle, digest) != NGX_OK) {
        return NULL;
    }

    if (memo == NULL) {
        cln = ngx_pool_cleanup_add(c->pool,
                                   sizeof(ngx_http_tokenrefresh_memo_t));
        if (cln == NULL) {
            /* no memo: the next request hashes again */
            return digest;
        }

        cln->handler = ngx_http_tokenrefresh_memo_cleanup;
        memo = cln->data;
    }

    ngx_memcpy(memo->handle, handle->data, handle->len);
    ngx_memcpy(memo->digest, digest, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    memo->valid = 1;

    return digest;
}


static void
ngx_http_tokenrefresh_memo_cleanup(void *data)
{
    ngx_explicit_memzero(data, sizeof(ngx_http_tokenrefresh_memo_t));
}


static ngx_int_t
ngx_http_tokenrefresh_session_digest(ngx_str_t *handle, u_char *digest)
{
    size_t  i;

    /* base64url: what ngx_http_tokenrefresh_session_new() writes */
    static const u_char  ok[256] = {
        ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
        ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
        ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
        ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
        ['Y'] = 1, ['Z'] = 1,
        ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
        ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
        ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
        ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
        ['y'] = 1, ['z'] = 1,
        ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
        ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['-'] = 1, ['_'] = 1
    };

    if (handle->len != NGX_HTTP_TOKENREFRESH_HANDLE_LEN) {
        return NGX_DECLINED;
    }

    for (i = 0; i < NGX_HTTP_TOKENREFRESH_HANDLE_LEN; i++) {
        if (!ok[handle->data[i]]) {
            return NGX_DECLINED;
        }
    }

    ngx_http_tokenrefresh_digest(digest, handle->data, handle->len);

    return NGX_OK;
}


/* a new handle for a login: never one the client chose (no fixation) */

ngx_int_t
ngx_http_tokenrefresh_session_new(ngx_pool_t *pool, ngx_str_t *handle,
    u_char *digest)
{
    u_char     raw[NGX_HTTP_TOKENREFRESH_HANDLE_BYTES];
    ngx_str_t  src;

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        return NGX_ERROR;
    }

    handle->data = ngx_pnalloc(pool, ngx_base64_encoded_length(sizeof(raw)));
    if (handle->data == NULL) {
        return NGX_ERROR;
    }

    src.data = raw;
    src.len = sizeof(raw);

    ngx_encode_base64url(handle, &src);

    OPENSSL_cleanse(raw, sizeof(raw));

    ngx_http_tokenrefresh_digest(digest, handle->data, handle->len);

    return NGX_OK;
}


/*
 * "Set-Cookie" with the handle, or clearing it (handle NULL).  Its
 * attributes were put together at nginx -t.
 */

ngx_int_t
ngx_http_tokenrefresh_session_cookie(ngx_http_request_t *r,
    ngx_http_tokenrefresh_session_conf_t *sc, ngx_str_t *handle)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   value;

    if (sc->cookie.len == 0) {
        return NGX_OK;
    }

    len = sc->cookie.len + 1 + sc->cookie_attrs.len
          + (handle ? handle->len : sizeof("; Max-Age=0") - 1);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value.data = p;

    p = ngx_cpymem(p, sc->cookie.data, sc->cookie.len);
    *p++ = '=';

    if (handle) {
        p = ngx_cpymem(p, handle->data, handle->len);
    }

    p = ngx_cpymem(p, sc->cookie_attrs.data, sc->cookie_attrs.len);

    if (handle == NULL) {
        p = ngx_cpymem(p, "; Max-Age=0", sizeof("; Max-Age=0") - 1);
    }

    value.len = p - value.data;

    return ngx_http_tokenrefresh_add_header_out(r, "Set-Cookie", &value);
}


/*
 * The one answer for "there is no session": no handle, a handle nobody
 * issued, a session that ended (refused refresh, idle, lifetime, logout,
 * an operator).  The app shows its login screen.
 */

ngx_int_t
ngx_http_tokenrefresh_session_ended(ngx_http_request_t *r,
    ngx_http_tokenrefresh_loc_conf_t *tlcf)
{
    ngx_int_t                  rc;
    ngx_str_t                  v;
    ngx_uint_t                 i;
    ngx_http_err_page_t       *err_page;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_complex_value_t   cv;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&v, "no-store");

    if (ngx_http_tokenrefresh_add_header_out(r, "WWW-Authenticate",
                                      &ngx_http_tokenrefresh_ended_auth)
        != NGX_OK
        || ngx_http_tokenrefresh_add_header_out(r, "Cache-Control", &v)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_tokenrefresh_session_cookie(r, &tlcf->session_conf, NULL)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* an error_page for the status takes over, as for any other status */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->error_pages) {
        err_page = clcf->error_pages->elts;

        for (i = 0; i < clcf->error_pages->nelts; i++) {
            if (err_page[i].status
                == (ngx_int_t) tlcf->session_conf.ended_status)
            {
                return tlcf->session_conf.ended_status;
            }
        }
    }

    ngx_memzero(&cv, sizeof(ngx_http_complex_value_t));
    cv.value = ngx_http_tokenrefresh_ended_body;

    ngx_str_set(&v, "application/json");

    rc = ngx_http_send_response(r, tlcf->session_conf.ended_status, &v, &cv);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/*
 * The logout location: the session ends at once (its handle is useless
 * from here on, in every worker), the cookie is cleared, and with
 * revoke=, the refresh token goes to the backend's revocation endpoint
 * (RFC 7009) before the answer: 204 either way, since the session is over
 * whatever the backend says.
 */

static ngx_int_t
ngx_http_tokenrefresh_logout_handler(ngx_http_request_t *r)
{
    u_char                             digest[NGX_HTTP_TOKENREFRESH_DIGEST_LEN];
    ngx_int_t                          rc;
    ngx_str_t                          handle;
    ngx_uint_t                         cookie;
    ngx_http_request_t                *sr;
    ngx_http_tokenrefresh_ctx_t       *ctx;
    ngx_http_tokenrefresh_logout_t    *lo;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    if (r != r->main) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_tokenrefresh_module);

    if (ctx) {
        /* back from the revocation */
        return ngx_http_tokenrefresh_logout_answer(r);
    }

    if (!(r->method & (NGX_HTTP_POST|NGX_HTTP_DELETE))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_tokenrefresh_session_handle_of(r, &tlcf->session_conf,
                                                 &handle, &cookie);

    if (rc == NGX_OK && cookie) {
        rc = ngx_http_tokenrefresh_session_csrf(r, &tlcf->session_conf);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    /* the request's context, as everywhere, with the logout in it */

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_tokenrefresh_ctx_t));
    lo = ngx_pcalloc(r->pool, sizeof(ngx_http_tokenrefresh_logout_t));

    if (ctx == NULL || lo == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->logout = lo;

    lo->zone = tlcf->session_zone->data;

    ngx_http_set_ctx(r, ctx, ngx_http_tokenrefresh_module);

    if (rc != NGX_OK
        || ngx_http_tokenrefresh_session_digest(&handle, digest) != NGX_OK)
    {
        /* nothing to end: the same answer, the cookie cleared */
        return ngx_http_tokenrefresh_logout_answer(r);
    }

    if (ngx_http_tokenrefresh_session_end(lo->zone, digest,
                                          tlcf->revoke_uri.len
                                          ? r->pool : NULL,
                                          &lo->refresh_token, &lo->kept)
        == NGX_DECLINED)
    {
        /* not here: it may live on other nodes of a fleet, and ends there */
        ngx_http_tokenrefresh_fleet_session_gone(lo->zone, digest);
        return ngx_http_tokenrefresh_logout_answer(r);
    }

    if (lo->zone->state) {
        /* the journal says the session is gone: it never comes back */
        (void) ngx_http_tokenrefresh_journal_put(lo->zone, NULL, 1, NULL,
                                                 NULL, NULL,
                                                 r->connection->log);
    }

    /* nor on any node of a fleet */
    ngx_http_tokenrefresh_fleet_session_gone(lo->zone, digest);

    if (lo->refresh_token.len == 0) {
        return ngx_http_tokenrefresh_logout_answer(r);
    }

    lo->ps.handler = ngx_http_tokenrefresh_revoked;
    lo->ps.data = lo;

    if (ngx_http_subrequest(r, &tlcf->revoke_uri, NULL, &sr, &lo->ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_tokenrefresh_token_subrequest(r, sr) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* held for the answer, which ngx_http_tokenrefresh_logout_resume() gives */
    r->main->count++;

    return NGX_DONE;
}


static ngx_http_tokenrefresh_logout_t *
ngx_http_tokenrefresh_get_logout(ngx_http_request_t *r)
{
    if (r->post_subrequest
        && r->post_subrequest->handler == ngx_http_tokenrefresh_revoked)
    {
        return r->post_subrequest->data;
    }

    return NULL;
}


/* what a revocation location may send: the refresh token, kept values */

ngx_int_t
ngx_http_tokenrefresh_revoke_tokens(ngx_http_request_t *r,
    ngx_str_t **refresh_token, ngx_str_t **kept)
{
    ngx_http_tokenrefresh_logout_t  *lo;

    lo = ngx_http_tokenrefresh_get_logout(r);

    if (lo == NULL) {
        return NGX_DECLINED;
    }

    *refresh_token = &lo->refresh_token;
    *kept = &lo->kept;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_revoked(ngx_http_request_t *r, void *data,
    ngx_int_t rc)
{
    ngx_http_tokenrefresh_logout_t *lo = data;

    lo->revoked = 1;
    lo->status = (r->upstream && r->upstream->state)
                 ? r->upstream->state->status : r->headers_out.status;

    /* the logout answers once its subrequest is done */
    r->parent->write_event_handler = ngx_http_tokenrefresh_logout_resume;

    if (lo->status < 200 || lo->status > 299) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "tokenrefresh: the revocation at logout answered %ui "
                      "(%i); the session has ended anyway", lo->status, rc);
    }

    return NGX_OK;
}


static void
ngx_http_tokenrefresh_logout_resume(ngx_http_request_t *r)
{
    ngx_http_finalize_request(r, ngx_http_tokenrefresh_logout_answer(r));
}


static ngx_int_t
ngx_http_tokenrefresh_logout_answer(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_str_t                          v;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    ngx_str_set(&v, "no-store");

    if (ngx_http_tokenrefresh_session_cookie(r, &tlcf->session_conf, NULL)
        != NGX_OK
        || ngx_http_tokenrefresh_add_header_out(r, "Cache-Control", &v)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    return ngx_http_send_special(r, NGX_HTTP_LAST);
}


/* directives */

char *
ngx_http_tokenrefresh_session_zone_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_shm_zone_t            *shm_zone;
    ngx_http_core_loc_conf_t  *clcf;

    value = cf->args->elts;

    if (cmd->offset == NGX_HTTP_TOKENREFRESH_SESSION_USE) {

        if (tlcf->shm_zone != NGX_CONF_UNSET_PTR) {
            return "is duplicate, or beside \"tokenrefresh\"";
        }

        if (ngx_strcmp(value[1].data, "off") == 0) {
            tlcf->shm_zone = NULL;
            return NGX_CONF_OK;
        }
    }

    if (tlcf->session_zone) {
        return "is duplicate";
    }

    shm_zone = ngx_http_tokenrefresh_use_zone(cf, &value[1]);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    switch (cmd->offset) {

    case NGX_HTTP_TOKENREFRESH_SESSION_USE:
        tlcf->shm_zone = shm_zone;
        tlcf->session = NGX_HTTP_TOKENREFRESH_SESSION_USE;
        tlcf->file = cf->conf_file->file.name.data;
        tlcf->line = cf->conf_file->line;
        break;

    case NGX_HTTP_TOKENREFRESH_SESSION_LOGIN:
        tlcf->session_zone = shm_zone;
        tlcf->session = NGX_HTTP_TOKENREFRESH_SESSION_LOGIN;
        break;

    default: /* NGX_HTTP_TOKENREFRESH_SESSION_LOGOUT */

        tlcf->session_zone = shm_zone;
        tlcf->session = NGX_HTTP_TOKENREFRESH_SESSION_LOGOUT;

        for (i = 2; i < cf->args->nelts; i++) {

            if (ngx_strncmp(value[i].data, "revoke=", 7) == 0) {
                tlcf->revoke_uri.data = value[i].data + 7;
                tlcf->revoke_uri.len = value[i].len - 7;

                if (tlcf->revoke_uri.len == 0
                    || tlcf->revoke_uri.data[0] != '/')
                {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "invalid \"revoke=\" URI \"%V\": an "
                                       "internal location's URI starting "
                                       "with \"/\" is expected",
                                       &tlcf->revoke_uri);
                    return NGX_CONF_ERROR;
                }

                continue;
            }

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->handler = ngx_http_tokenrefresh_logout_handler;
        break;
    }

    return NGX_CONF_OK;
}


/*
 * tokenrefresh_session_cookie name [path=] [domain=] [samesite=]
 *     [max_age=] [insecure] | off
 */

char *
ngx_http_tokenrefresh_session_cookie_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    u_char                                *p;
    time_t                                 max_age;
    ngx_str_t                             *value, path, domain, samesite, s;
    ngx_uint_t                             i, secure;
    ngx_http_tokenrefresh_session_conf_t  *sc;

    sc = &tlcf->session_conf;

    if (sc->cookie.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ngx_str_set(&sc->cookie, "");
        return NGX_CONF_OK;
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (*p <= 0x20 || *p >= 0x7f || ngx_strchr("()<>@,;:\\\"/[]?={}", *p))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid cookie name \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    sc->cookie = value[1];

    ngx_str_set(&path, "/");
    ngx_str_null(&domain);
    ngx_str_set(&samesite, "Strict");
    max_age = 0;
    secure = 1;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "path=", 5) == 0) {
            path.data = value[i].data + 5;
            path.len = value[i].len - 5;

            if (path.len == 0 || path.data[0] != '/') {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "domain=", 7) == 0) {
            domain.data = value[i].data + 7;
            domain.len = value[i].len - 7;

            if (domain.len == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "samesite=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            if (s.len == 6 && ngx_strncasecmp(s.data, (u_char *) "strict", 6)
                              == 0)
            {
                ngx_str_set(&samesite, "Strict");

            } else if (s.len == 3
                       && ngx_strncasecmp(s.data, (u_char *) "lax", 3) == 0)
            {
                ngx_str_set(&samesite, "Lax");

            } else if (s.len == 4
                       && ngx_strncasecmp(s.data, (u_char *) "none", 4) == 0)
            {
                ngx_str_set(&samesite, "None");

            } else {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_age=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            max_age = ngx_parse_time(&s, 1);

            if (max_age == (time_t) NGX_ERROR || max_age == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "insecure") == 0) {
            secure = 0;
            continue;
        }

        goto invalid;
    }

    /* what browsers require of these names (RFC 6265bis, 4.1.3) */

    if (ngx_strncmp(sc->cookie.data, "__Host-", 7) == 0
        && (!secure || domain.len || path.len != 1))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "a \"__Host-\" cookie must be secure, with "
                           "path=/ and no domain=");
        return NGX_CONF_ERROR;
    }

    if (ngx_strncmp(sc->cookie.data, "__Secure-", 9) == 0 && !secure) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "a \"__Secure-\" cookie must be secure");
        return NGX_CONF_ERROR;
    }

    if (samesite.len == 4 && !secure) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"samesite=none\" needs a secure cookie");
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, sizeof("; Path=; Domain=; Max-Age=; HttpOnly; "
                                     "Secure; SameSite=Strict") - 1
                              + path.len + domain.len + NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    sc->cookie_attrs.data = p;

    p = ngx_sprintf(p, "; Path=%V", &path);

    if (domain.len) {
        p = ngx_sprintf(p, "; Domain=%V", &domain);
    }

    if (max_age) {
        p = ngx_sprintf(p, "; Max-Age=%T", max_age);
    }

    p = ngx_cpymem(p, "; HttpOnly", sizeof("; HttpOnly") - 1);

    if (secure) {
        p = ngx_cpymem(p, "; Secure", sizeof("; Secure") - 1);
    }

    p = ngx_sprintf(p, "; SameSite=%V", &samesite);

    sc->cookie_attrs.len = p - sc->cookie_attrs.data;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* tokenrefresh_session_keep name value: kept from the login request */

char *
ngx_http_tokenrefresh_session_keep_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    u_char                            *p;
    ngx_str_t                         *value;
    ngx_http_tokenrefresh_keep_t      *k;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > 64) {
        return "needs a name of 1 to 64 characters";
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
              || *p == '_'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid name \"%V\": lower-case letters, "
                               "digits and \"_\" only", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (tlcf->keep == NGX_CONF_UNSET_PTR || tlcf->keep == NULL) {
        tlcf->keep = ngx_array_create(cf->pool, 2,
                                      sizeof(ngx_http_tokenrefresh_keep_t));
        if (tlcf->keep == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    k = ngx_array_push(tlcf->keep);
    if (k == NULL) {
        return NGX_CONF_ERROR;
    }

    k->name = value[1];

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &k->value;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* tokenrefresh_session_origins https://app.example.com ... */

char *
ngx_http_tokenrefresh_session_origins_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf)
{
    ngx_http_tokenrefresh_loc_conf_t *tlcf = conf;

    ngx_str_t   *value, *o;
    ngx_uint_t   i;

    if (tlcf->session_conf.origins != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    tlcf->session_conf.origins = ngx_array_create(cf->pool,
                                                  cf->args->nelts - 1,
                                                  sizeof(ngx_str_t));
    if (tlcf->session_conf.origins == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if ((ngx_strncmp(value[i].data, "https://", 8) != 0
             && ngx_strncmp(value[i].data, "http://", 7) != 0)
            || value[i].data[value[i].len - 1] == '/'
            || ngx_strlchr(value[i].data + 8, value[i].data + value[i].len,
                           '/'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid origin \"%V\": scheme://host[:port] "
                               "is expected, as browsers send it",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        o = ngx_array_push(tlcf->session_conf.origins);
        if (o == NULL) {
            return NGX_CONF_ERROR;
        }

        *o = value[i];
    }

    return NGX_CONF_OK;
}


char *
ngx_http_tokenrefresh_session_merge(ngx_conf_t *cf,
    ngx_http_tokenrefresh_loc_conf_t *prev,
    ngx_http_tokenrefresh_loc_conf_t *conf)
{
    ngx_http_tokenrefresh_session_conf_t  *sc, *psc;

    sc = &conf->session_conf;
    psc = &prev->session_conf;

    if (sc->cookie.data == NULL) {
        sc->cookie = psc->cookie;
        sc->cookie_attrs = psc->cookie_attrs;
    }

    if (sc->cookie.data == NULL) {
        ngx_str_set(&sc->cookie, "__Host-session");
        ngx_str_set(&sc->cookie_attrs,
                    "; Path=/; HttpOnly; Secure; SameSite=Strict");
    }

    ngx_conf_merge_str_value(sc->header, psc->header, "");
    ngx_conf_merge_str_value(sc->handle_json, psc->handle_json, "");
    ngx_conf_merge_str_value(sc->handle_header, psc->handle_header, "");
    ngx_conf_merge_str_value(sc->csrf_header, psc->csrf_header, "");
    ngx_conf_merge_ptr_value(sc->origins, psc->origins, NULL);
    ngx_conf_merge_uint_value(sc->ended_status, psc->ended_status,
                              NGX_HTTP_UNAUTHORIZED);
    ngx_conf_merge_ptr_value(conf->keep, prev->keep, NULL);

    if (conf->session == NGX_HTTP_TOKENREFRESH_SESSION_LOGIN
        && sc->cookie.len == 0 && sc->handle_json.len == 0
        && sc->handle_header.len == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"tokenrefresh_session_login\" gives the handle to "
                      "nobody: tokenrefresh_session_cookie is off and there "
                      "is no tokenrefresh_session_handle_json or "
                      "tokenrefresh_session_handle_header");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
