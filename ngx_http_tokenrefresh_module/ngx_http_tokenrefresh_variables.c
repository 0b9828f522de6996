
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * Variables.  The token reaches the upstream through a variable that the
 * configuration passes explicitly (proxy_set_header, grpc_set_header,
 * fastcgi_param), never by rewriting the client's request headers, which
 * $http_authorization, subrequests (mirror, auth_request) and error_page
 * targets would all see.
 *
 * A token variable has a value only while the request to the upstream is
 * being built: in the client request, where the module attached the token
 * in this pass; and in the module's own token requests, for the refresh
 * token, the current access token and the client assertion.  It is empty
 * everywhere else: in add_header, return, log_format (the access log line
 * of a token request with log_subrequest on too), in error pages and in
 * every response nginx makes itself (502, 504, 499), in other
 * subrequests.
 */


#include "ngx_http_tokenrefresh_module.h"


#define NGX_HTTP_TOKENREFRESH_VAR_ACCESS    0x01
#define NGX_HTTP_TOKENREFRESH_VAR_REFRESH   0x02
#define NGX_HTTP_TOKENREFRESH_VAR_BEARER    0x04
#define NGX_HTTP_TOKENREFRESH_VAR_FORM      0x08
#define NGX_HTTP_TOKENREFRESH_VAR_JSON      0x10


static ngx_int_t ngx_http_tokenrefresh_token_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_assertion_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_credential_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_outcome_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_kept_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_tokenrefresh_wait_time_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_uint_t ngx_http_tokenrefresh_clone(ngx_http_request_t *r,
    uintptr_t data, ngx_str_t **token);
static ngx_uint_t ngx_http_tokenrefresh_building(ngx_http_request_t *r);
static void ngx_http_tokenrefresh_sent(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx);
static ngx_int_t ngx_http_tokenrefresh_escape(ngx_http_request_t *r,
    ngx_str_t *token, ngx_uint_t how, ngx_http_variable_value_t *v);


static ngx_http_variable_t  ngx_http_tokenrefresh_vars[] = {

    { ngx_string("tokenrefresh_authorization"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_ACCESS|NGX_HTTP_TOKENREFRESH_VAR_BEARER,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_access_token"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_ACCESS,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_access_token_form"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_ACCESS|NGX_HTTP_TOKENREFRESH_VAR_FORM,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_access_token_json"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_ACCESS|NGX_HTTP_TOKENREFRESH_VAR_JSON,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_refresh_token"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_REFRESH,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_refresh_token_form"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_REFRESH|NGX_HTTP_TOKENREFRESH_VAR_FORM,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_refresh_token_json"), NULL,
      ngx_http_tokenrefresh_token_variable,
      NGX_HTTP_TOKENREFRESH_VAR_REFRESH|NGX_HTTP_TOKENREFRESH_VAR_JSON,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_client_assertion"), NULL,
      ngx_http_tokenrefresh_assertion_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_credential"), NULL,
      ngx_http_tokenrefresh_credential_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_outcome"), NULL,
      ngx_http_tokenrefresh_outcome_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("tokenrefresh_wait_time"), NULL,
      ngx_http_tokenrefresh_wait_time_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_tokenrefresh_outcomes[] = {
    ngx_null_string,
    ngx_string("hit"),
    ngx_string("refreshed"),
    ngx_string("waited"),
    ngx_string("failed"),
    ngx_string("denied"),
    ngx_string("replayed"),
    ngx_string("gone"),
    ngx_string("ended")
};


ngx_int_t
ngx_http_tokenrefresh_add_variables(ngx_conf_t *cf)
{
    ngx_str_t             prefix;
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_tokenrefresh_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    ngx_str_set(&prefix, "tokenrefresh_kept_");

    var = ngx_http_add_variable(cf, &prefix,
                                NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_tokenrefresh_kept_variable;

    return NGX_OK;
}


/*
 * $tokenrefresh_kept_NAME: what a session kept from its login request
 * (tokenrefresh_session_keep), in its refresh and revocation requests.
 */

static ngx_int_t
ngx_http_tokenrefresh_kept_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                        *var = (ngx_str_t *) data;

    ngx_str_t                         name, value, *kept, *token;
    ngx_http_tokenrefresh_refresh_t  *rf;

    kept = NULL;

    rf = ngx_http_tokenrefresh_get_refresh(r);

    if (rf) {
        kept = &rf->kept;

    } else if (ngx_http_tokenrefresh_revoke_tokens(r, &token, &kept)
               != NGX_OK)
    {
        kept = NULL;
    }

    name.data = var->data + sizeof("tokenrefresh_kept_") - 1;
    name.len = var->len - (sizeof("tokenrefresh_kept_") - 1);

    if (kept == NULL
        || ngx_http_tokenrefresh_kept_value(kept, &name, &value) != NGX_OK)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = value.data;
    v->len = value.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_token_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                        *token, *kept;
    ngx_http_tokenrefresh_ctx_t      *ctx;
    ngx_http_tokenrefresh_refresh_t  *rf;

    token = NULL;

    if (!ngx_http_tokenrefresh_building(r)) {
        goto not_found;
    }

    if (r == r->main) {
        ctx = ngx_http_get_module_ctx(r, ngx_http_tokenrefresh_module);

        if (ctx == NULL || !ctx->attached
            || !(data & NGX_HTTP_TOKENREFRESH_VAR_ACCESS))
        {
            goto not_found;
        }

        if (!ctx->sent) {
            ngx_http_tokenrefresh_sent(r, ctx);
        }

        if (data & NGX_HTTP_TOKENREFRESH_VAR_BEARER) {
            /* made when the token was attached */
            v->data = ctx->authorization.data;
            v->len = ctx->authorization.len;
            v->valid = 1;
            v->no_cacheable = 1;
            v->not_found = 0;
            return NGX_OK;
        }

        token = &ctx->token;

    } else if (ngx_http_tokenrefresh_clone(r, data, &token)) {
        /* proxy_cache_background_update: the client request's token */

    } else if (ngx_http_tokenrefresh_revoke_tokens(r, &token, &kept)
               == NGX_OK)
    {
        /* a logout's revocation sends the refresh token only */

        if (!(data & NGX_HTTP_TOKENREFRESH_VAR_REFRESH)) {
            goto not_found;
        }

    } else {
        rf = ngx_http_tokenrefresh_get_refresh(r);

        /*
         * $tokenrefresh_authorization stays empty in a token request: a
         * proxy_set_header inherited from the server must not send the
         * access token to the token endpoint; the backends that want it
         * get it by name
         */

        if (rf == NULL || (data & NGX_HTTP_TOKENREFRESH_VAR_BEARER)) {
            goto not_found;
        }

        token = (data & NGX_HTTP_TOKENREFRESH_VAR_REFRESH)
                ? &rf->refresh_token : &rf->access_token;
    }

    if (token->len == 0) {
        goto not_found;
    }

    return ngx_http_tokenrefresh_escape(r, token, data, v);

not_found:

    v->not_found = 1;

    return NGX_OK;
}


/*
 * A background update of a cached answer (proxy_cache_background_update)
 * is a clone of the client request, in its location, that no attach step
 * ran for: it sends the token the client request had.
 */

static ngx_uint_t
ngx_http_tokenrefresh_clone(ngx_http_request_t *r, uintptr_t data,
    ngx_str_t **token)
{
    ngx_http_tokenrefresh_ctx_t       *ctx;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    if (!r->background || !(data & NGX_HTTP_TOKENREFRESH_VAR_ACCESS)) {
        return 0;
    }

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_tokenrefresh_module);
    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    if (ctx == NULL || !ctx->attached || ctx->lcf != tlcf) {
        return 0;
    }

    *token = (data & NGX_HTTP_TOKENREFRESH_VAR_BEARER) ? &ctx->authorization
                                                        : &ctx->token;

    return 1;
}


/*
 * Is the request to the upstream being built?  The upstream module's
 * create_request() evaluates the headers and body it sends, and replaces
 * u->request_bufs, which until then is the client's body (or nothing).
 * Once the request is made, sent, or an answer is being made (the
 * upstream's, an error page, one of nginx's own), it is not.
 */

static ngx_uint_t
ngx_http_tokenrefresh_building(ngx_http_request_t *r)
{
    ngx_http_upstream_t  *u;

    u = r->upstream;

    if (u == NULL || u->request_sent || u->headers_in.status_n
        || r->headers_out.status || r->header_sent)
    {
        return 0;
    }

    return u->request_bufs == NULL
           || (r->request_body && u->request_bufs == r->request_body->bufs);
}


/*
 * The token is in the request to this upstream: a rejection from it is
 * ours to act on.  If an error_page may take over its answer, the context
 * must be found again after the redirect.
 */

static void
ngx_http_tokenrefresh_sent(ngx_http_request_t *r,
    ngx_http_tokenrefresh_ctx_t *ctx)
{
    ctx->sent = 1;
    ctx->upstream = r->upstream;

    if (r->upstream->conf && r->upstream->conf->intercept_errors) {
        (void) ngx_http_tokenrefresh_keep_ctx(r, ctx);
    }
}


static ngx_int_t
ngx_http_tokenrefresh_escape(ngx_http_request_t *r, ngx_str_t *token,
    ngx_uint_t how, ngx_http_variable_value_t *v)
{
    u_char  *p;
    size_t   len;

    if (how & NGX_HTTP_TOKENREFRESH_VAR_FORM) {

        /* application/x-www-form-urlencoded keeps unreserved bytes only */

        len = token->len
              + 2 * ngx_escape_uri(NULL, token->data, token->len,
                                   NGX_ESCAPE_URI_COMPONENT);

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        (void) ngx_escape_uri(p, token->data, token->len,
                              NGX_ESCAPE_URI_COMPONENT);

    } else if (how & NGX_HTTP_TOKENREFRESH_VAR_JSON) {

        len = token->len + ngx_escape_json(NULL, token->data, token->len);

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        (void) ngx_escape_json(p, token->data, token->len);

    } else {
        p = token->data;
        len = token->len;
    }

    v->data = p;
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* a freshly signed client assertion, in the module's token subrequests */

static ngx_int_t
ngx_http_tokenrefresh_assertion_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                          jwt;
    ngx_http_tokenrefresh_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_tokenrefresh_module);

    if (tlcf->assertion == NULL
        || ngx_http_tokenrefresh_get_refresh(r) == NULL
        || !ngx_http_tokenrefresh_building(r))
    {
        v->not_found = 1;
        return NGX_OK;
    }

    if (ngx_http_tokenrefresh_assertion(r->pool, tlcf->assertion, &jwt)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "tokenrefresh: could not sign a client assertion");
        return NGX_ERROR;
    }

    v->data = jwt.data;
    v->len = jwt.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_credential_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                        *name;
    ngx_http_tokenrefresh_ctx_t      *ctx;
    ngx_http_tokenrefresh_refresh_t  *rf;

    name = NULL;

    if (r == r->main) {
        ctx = ngx_http_tokenrefresh_find_ctx(r);

        if (ctx) {
            /* a session is named by its digest, never its handle */
            name = ctx->session ? &ctx->log_name : &ctx->name;
        }

    } else {
        rf = ngx_http_tokenrefresh_get_refresh(r);

        if (rf) {
            name = rf->session ? &rf->log_name : &rf->name;
        }
    }

    if (name == NULL || name->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = name->data;
    v->len = name->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_outcome_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_tokenrefresh_ctx_t  *ctx;

    ngx_uint_t                    outcome;

    ctx = ngx_http_tokenrefresh_find_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    /* logged while it still waited: its client went away */

    outcome = ctx->waiting ? NGX_HTTP_TOKENREFRESH_R_GONE : ctx->outcome;

    if (outcome == NGX_HTTP_TOKENREFRESH_R_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ngx_http_tokenrefresh_outcomes[outcome].data;
    v->len = ngx_http_tokenrefresh_outcomes[outcome].len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_wait_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                       *p;
    ngx_msec_t                    ms;
    ngx_http_tokenrefresh_ctx_t  *ctx;

    ctx = ngx_http_tokenrefresh_find_ctx(r->main);

    if (ctx == NULL
        || (ctx->outcome == NGX_HTTP_TOKENREFRESH_R_NONE && !ctx->waiting))
    {
        v->not_found = 1;
        return NGX_OK;
    }

    ms = ctx->waiting ? ngx_current_msec - ctx->wait_start : ctx->waited;

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%T.%03M", (time_t) ms / 1000, ms % 1000) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}
