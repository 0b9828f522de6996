
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * Cryptography, all of it through OpenSSL's EVP interface: token
 * fingerprints, the AES-256-GCM sealing of the state file, and the signed
 * JWTs of client assertions (RFC 7523: RS256, ES256, HS256).  Everything
 * OpenSSL allocates is freed before the function returns; keys loaded from
 * the configuration are freed with the configuration's pool.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>


static void ngx_http_tokenrefresh_pkey_cleanup(void *data);
static ngx_int_t ngx_http_tokenrefresh_sign(
    ngx_http_tokenrefresh_assertion_t *a, u_char *data, size_t len,
    u_char *sig, size_t *siglen);


/*
 * The first bytes of the SHA-256 of a token, in hex: enough to tell two
 * tokens apart in a log, useless to an attacker.
 */

void
ngx_http_tokenrefresh_fingerprint(u_char *dst, u_char *data, size_t len)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        ngx_memset(dst, '?', NGX_HTTP_TOKENREFRESH_FP_LEN);
        return;
    }

    ngx_hex_dump(dst, md, NGX_HTTP_TOKENREFRESH_FP_LEN / 2);
}


/*
 * The raw first 16 bytes of the SHA-256: the spent tokens, and a session's
 * name on every request that carries a handle.  OpenSSL 3 looks the
 * algorithm up again on each EVP_Digest() call (about 40 % of the cost of
 * hashing a handle), so the worker fetches SHA-256 once and keeps one
 * context.  Only the event loop calls this: no thread shares them.
 */

static EVP_MD      *ngx_http_tokenrefresh_sha256;
static EVP_MD_CTX  *ngx_http_tokenrefresh_sha256_ctx;
static ngx_uint_t   ngx_http_tokenrefresh_sha256_keep;


void
ngx_http_tokenrefresh_digest(u_char *dst, u_char *data, size_t len)
{
    u_char              md[EVP_MAX_MD_SIZE];
    unsigned int        mdlen;
    EVP_MD             *sha256;
    EVP_MD_CTX         *ctx;

    sha256 = ngx_http_tokenrefresh_sha256;
    ctx = ngx_http_tokenrefresh_sha256_ctx;

    /*
     * kept from a worker's start (or nginx's, without a master) to its
     * exit only: the master unloads the module at a reload, and a context
     * kept there would be lost
     */

    if (ctx == NULL && ngx_http_tokenrefresh_sha256_keep) {
        sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        ctx = EVP_MD_CTX_new();

        if (sha256 == NULL || ctx == NULL) {
            EVP_MD_free(sha256);
            EVP_MD_CTX_free(ctx);
            goto once;
        }

        ngx_http_tokenrefresh_sha256 = sha256;
        ngx_http_tokenrefresh_sha256_ctx = ctx;
    }

    if (ctx
        && EVP_DigestInit_ex2(ctx, sha256, NULL) == 1
        && EVP_DigestUpdate(ctx, data, len) == 1
        && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1)
    {
        ngx_memcpy(dst, md, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
        return;
    }

once:

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        ngx_memzero(dst, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
        return;
    }

    ngx_memcpy(dst, md, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
}


void
ngx_http_tokenrefresh_digest_keep(void)
{
    ngx_http_tokenrefresh_sha256_keep = 1;
}


void
ngx_http_tokenrefresh_digest_free(void)
{
    ngx_http_tokenrefresh_sha256_keep = 0;

    EVP_MD_CTX_free(ngx_http_tokenrefresh_sha256_ctx);
    EVP_MD_free(ngx_http_tokenrefresh_sha256);

    ngx_http_tokenrefresh_sha256_ctx = NULL;
    ngx_http_tokenrefresh_sha256 = NULL;
}


/*
 * AES-256-GCM: out = nonce (12 random bytes) | ciphertext | tag (16).  The
 * additional data binds the file to its zone.
 */

ngx_int_t
ngx_http_tokenrefresh_seal(ngx_pool_t *pool, u_char *key, ngx_str_t *aad,
    ngx_str_t *plain, ngx_str_t *out)
{
    out->len = NGX_HTTP_TOKENREFRESH_SEALED_LEN(plain->len);
    out->data = ngx_pnalloc(pool, out->len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_tokenrefresh_seal_to(key, aad, plain, out->data);
}


/*
 * The same into a buffer of NGX_HTTP_TOKENREFRESH_SEALED_LEN(plain->len)
 * bytes: no pool and no log, so that a thread of a thread pool may call it
 * (OpenSSL 3 is thread-safe).
 */

ngx_int_t
ngx_http_tokenrefresh_seal_to(u_char *key, ngx_str_t *aad, ngx_str_t *plain,
    u_char *out)
{
    int               n;
    u_char           *p;
    ngx_int_t         rc;
    EVP_CIPHER_CTX   *ctx;

    p = out;

    if (RAND_bytes(p, NGX_HTTP_TOKENREFRESH_NONCE_LEN) != 1) {
        return NGX_ERROR;
    }

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, p) != 1
        || EVP_EncryptUpdate(ctx, NULL, &n, aad->data, (int) aad->len) != 1)
    {
        goto done;
    }

    p += NGX_HTTP_TOKENREFRESH_NONCE_LEN;

    if (EVP_EncryptUpdate(ctx, p, &n, plain->data, (int) plain->len) != 1) {
        goto done;
    }

    p += n;

    if (EVP_EncryptFinal_ex(ctx, p, &n) != 1) {
        goto done;
    }

    p += n;

    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG,
                            NGX_HTTP_TOKENREFRESH_TAG_LEN, p)
        != 1)
    {
        goto done;
    }

    rc = NGX_OK;

done:

    EVP_CIPHER_CTX_free(ctx);

    return rc;
}


/* NGX_DECLINED: not ours, truncated or tampered with (the tag failed) */

ngx_int_t
ngx_http_tokenrefresh_open(ngx_pool_t *pool, u_char *key, ngx_str_t *aad,
    ngx_str_t *in, ngx_str_t *plain)
{
    if (in->len < NGX_HTTP_TOKENREFRESH_SEALED_LEN(0)) {
        return NGX_DECLINED;
    }

    plain->data = ngx_pnalloc(pool, in->len + 1);
    if (plain->data == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_tokenrefresh_open_to(key, aad, in, plain);
}


/* into plain->data, of in->len bytes at least; thread-safe as above */

ngx_int_t
ngx_http_tokenrefresh_open_to(u_char *key, ngx_str_t *aad, ngx_str_t *in,
    ngx_str_t *plain)
{
    int              n;
    size_t           len;
    u_char          *nonce, *tag;
    ngx_int_t        rc;
    EVP_CIPHER_CTX  *ctx;

    if (in->len < NGX_HTTP_TOKENREFRESH_SEALED_LEN(0)) {
        return NGX_DECLINED;
    }

    nonce = in->data;
    len = in->len - NGX_HTTP_TOKENREFRESH_SEALED_LEN(0);
    tag = in->data + in->len - NGX_HTTP_TOKENREFRESH_TAG_LEN;

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_DECLINED;

    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1
        || EVP_DecryptUpdate(ctx, NULL, &n, aad->data, (int) aad->len) != 1
        || EVP_DecryptUpdate(ctx, plain->data, &n,
                             nonce + NGX_HTTP_TOKENREFRESH_NONCE_LEN,
                             (int) len)
           != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG,
                               NGX_HTTP_TOKENREFRESH_TAG_LEN, tag)
           != 1)
    {
        goto done;
    }

    plain->len = n;

    if (EVP_DecryptFinal_ex(ctx, plain->data + n, &n) != 1) {
        goto done;
    }

    plain->len += n;
    rc = NGX_OK;

done:

    EVP_CIPHER_CTX_free(ctx);
    ERR_clear_error();

    return rc;
}


/*
 * A journal frame: salt (16 random bytes) | sealed, under a key of its
 * own, HMAC-SHA256(key, salt).  A busy zone seals many frames under one
 * state key; with a key per frame, the bound on random GCM nonces under
 * one key (2^32) is never near.  Thread-safe.
 */

static ngx_int_t
ngx_http_tokenrefresh_frame_key(u_char *key, u_char *salt, u_char *out)
{
    unsigned int  len;

    if (HMAC(EVP_sha256(), key, NGX_HTTP_TOKENREFRESH_KEY_LEN, salt,
             NGX_HTTP_TOKENREFRESH_SALT_LEN, out, &len)
        == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_tokenrefresh_seal_frame(u_char *key, ngx_str_t *aad,
    ngx_str_t *plain, u_char *out)
{
    u_char     fkey[EVP_MAX_MD_SIZE];
    ngx_int_t  rc;

    if (RAND_bytes(out, NGX_HTTP_TOKENREFRESH_SALT_LEN) != 1
        || ngx_http_tokenrefresh_frame_key(key, out, fkey) != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_http_tokenrefresh_seal_to(fkey, aad, plain,
                                       out + NGX_HTTP_TOKENREFRESH_SALT_LEN);

    ngx_explicit_memzero(fkey, sizeof(fkey));

    return rc;
}


/* opened with the key, or else the key being rotated away */

ngx_int_t
ngx_http_tokenrefresh_open_either(ngx_pool_t *pool, u_char *key,
    u_char *old_key, ngx_str_t *aad, ngx_str_t *in, ngx_str_t *plain)
{
    ngx_int_t  rc;

    rc = ngx_http_tokenrefresh_open(pool, key, aad, in, plain);

    if (rc == NGX_DECLINED && old_key) {
        rc = ngx_http_tokenrefresh_open(pool, old_key, aad, in, plain);
    }

    return rc;
}


ngx_int_t
ngx_http_tokenrefresh_open_frame(u_char *key, ngx_str_t *aad, ngx_str_t *in,
    ngx_str_t *plain)
{
    u_char     fkey[EVP_MAX_MD_SIZE];
    ngx_int_t  rc;
    ngx_str_t  sealed;

    if (in->len < NGX_HTTP_TOKENREFRESH_FRAME_LEN(0)) {
        return NGX_DECLINED;
    }

    if (ngx_http_tokenrefresh_frame_key(key, in->data, fkey) != NGX_OK) {
        return NGX_ERROR;
    }

    sealed.data = in->data + NGX_HTTP_TOKENREFRESH_SALT_LEN;
    sealed.len = in->len - NGX_HTTP_TOKENREFRESH_SALT_LEN;

    rc = ngx_http_tokenrefresh_open_to(fkey, aad, &sealed, plain);

    ngx_explicit_memzero(fkey, sizeof(fkey));

    return rc;
}


/*
 * Client assertions.  The key is loaded when the configuration is read, so
 * that "nginx -t" reports a missing, unreadable or wrong key, and checked
 * against the algorithm.
 */

char *
ngx_http_tokenrefresh_assertion_key(ngx_conf_t *cf,
    ngx_http_tokenrefresh_assertion_t *a, ngx_str_t *file)
{
    int                  type, bits;
    BIO                 *bio;
    char                 group[32];
    EVP_PKEY            *pkey;
    ngx_str_t            pem;
    ngx_pool_cleanup_t  *cln;

    /* a private key: the owner's only, as any other secret */

    if (ngx_http_tokenrefresh_read_secret(cf, file, &pem) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    bio = BIO_new_mem_buf(pem.data, (int) pem.len);
    if (bio == NULL) {
        ngx_explicit_memzero(pem.data, pem.len);
        return NGX_CONF_ERROR;
    }

    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);

    BIO_free(bio);
    ngx_explicit_memzero(pem.data, pem.len);

    if (pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is not an unencrypted PEM private key",
                           file);
        ERR_clear_error();
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(pkey);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_tokenrefresh_pkey_cleanup;
    cln->data = pkey;

    type = EVP_PKEY_base_id(pkey);
    bits = EVP_PKEY_bits(pkey);

    if (a->alg == NGX_HTTP_TOKENREFRESH_RS256) {
        if (type != EVP_PKEY_RSA || bits < 2048 || bits > 8192) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "RS256 needs an RSA key of 2048 to 8192 "
                               "bits, \"%V\" is not one", file);
            return NGX_CONF_ERROR;
        }

    } else if (type != EVP_PKEY_EC
               || EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL)
                  != 1
               || ngx_strcmp(group, "prime256v1") != 0)
    {
        ERR_clear_error();
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ES256 needs an EC key on the P-256 curve, "
                           "\"%V\" is not one", file);
        return NGX_CONF_ERROR;
    }

    a->pkey = pkey;

    return NGX_CONF_OK;
}


static void
ngx_http_tokenrefresh_pkey_cleanup(void *data)
{
    EVP_PKEY_free(data);
}


/*
 * A fresh JWT: {"alg", "typ": "JWT"[, "kid"]} . {"iss", "sub", "aud",
 * "jti", "iat", "exp"} . signature, base64url-encoded (RFC 7515, 7519,
 * 7523).  The jti is 16 random bytes.
 */

ngx_int_t
ngx_http_tokenrefresh_assertion(ngx_pool_t *pool,
    ngx_http_tokenrefresh_assertion_t *a, ngx_str_t *jwt)
{
    u_char      *p, *last, rnd[16], jti[32], sig[1024];
    size_t       siglen, len;
    time_t       now;
    ngx_str_t    header, payload, s;
    const char  *alg;

    static const char  *algs[] = { "RS256", "ES256", "HS256" };

    alg = algs[a->alg];
    now = ngx_time();

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    ngx_hex_dump(jti, rnd, sizeof(rnd));

    /* the JSON: client ids and audiences are escaped, the rest is ours */

    len = sizeof("{\"alg\":\"\",\"typ\":\"JWT\",\"kid\":\"\"}") + 5
          + a->kid.len + ngx_escape_json(NULL, a->kid.data, a->kid.len);

    header.data = ngx_pnalloc(pool, len);
    if (header.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(header.data, "{\"alg\":\"%s\",\"typ\":\"JWT\"", alg);

    if (a->kid.len) {
        p = ngx_cpymem(p, ",\"kid\":\"", sizeof(",\"kid\":\"") - 1);
        p = (u_char *) ngx_escape_json(p, a->kid.data, a->kid.len);
        *p++ = '"';
    }

    *p++ = '}';
    header.len = p - header.data;

    len = sizeof("{\"iss\":\"\",\"sub\":\"\",\"aud\":\"\",\"jti\":\"\","
                 "\"iat\":,\"exp\":}")
          + 2 * (a->client_id.len
                 + ngx_escape_json(NULL, a->client_id.data,
                                   a->client_id.len))
          + a->audience.len
          + ngx_escape_json(NULL, a->audience.data, a->audience.len)
          + sizeof(jti) + 2 * NGX_TIME_T_LEN;

    payload.data = ngx_pnalloc(pool, len);
    if (payload.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(payload.data, "{\"iss\":\"", sizeof("{\"iss\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, a->client_id.data, a->client_id.len);
    p = ngx_cpymem(p, "\",\"sub\":\"", sizeof("\",\"sub\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, a->client_id.data, a->client_id.len);
    p = ngx_cpymem(p, "\",\"aud\":\"", sizeof("\",\"aud\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, a->audience.data, a->audience.len);
    p = ngx_sprintf(p, "\",\"jti\":\"%*s\",\"iat\":%T,\"exp\":%T}",
                    sizeof(jti), jti, now,
                    now + (time_t) (a->lifetime / 1000));
    payload.len = p - payload.data;

    /* the signing input: base64url(header) "." base64url(payload) */

    len = ngx_base64_encoded_length(header.len) + 1
          + ngx_base64_encoded_length(payload.len) + 1
          + ngx_base64_encoded_length(sizeof(sig));

    jwt->data = ngx_pnalloc(pool, len);
    if (jwt->data == NULL) {
        return NGX_ERROR;
    }

    s.data = jwt->data;
    ngx_encode_base64url(&s, &header);
    p = s.data + s.len;
    *p++ = '.';

    s.data = p;
    ngx_encode_base64url(&s, &payload);
    p = s.data + s.len;

    siglen = sizeof(sig);

    if (ngx_http_tokenrefresh_sign(a, jwt->data, p - jwt->data, sig,
                                   &siglen)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    *p++ = '.';

    s.data = p;
    header.data = sig;
    header.len = siglen;
    ngx_encode_base64url(&s, &header);

    last = s.data + s.len;
    jwt->len = last - jwt->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_tokenrefresh_sign(ngx_http_tokenrefresh_assertion_t *a,
    u_char *data, size_t len, u_char *sig, size_t *siglen)
{
    u_char              der[128];
    size_t              derlen;
    ngx_int_t           rc;
    EVP_PKEY           *pkey;
    EVP_MD_CTX         *md;
    ECDSA_SIG          *es;
    const BIGNUM       *r, *s;
    const u_char       *q;

    pkey = a->pkey;
    md = NULL;

    if (a->alg == NGX_HTTP_TOKENREFRESH_HS256) {
        pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_HMAC, NULL,
                                            a->secret.data, a->secret.len);
        if (pkey == NULL) {
            return NGX_ERROR;
        }
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    rc = NGX_ERROR;

    if (a->alg == NGX_HTTP_TOKENREFRESH_ES256) {

        /* JWS wants R || S, OpenSSL gives DER (RFC 7518, section 3.4) */

        derlen = sizeof(der);

        if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) != 1
            || EVP_DigestSign(md, der, &derlen, data, len) != 1)
        {
            goto done;
        }

        q = der;
        es = d2i_ECDSA_SIG(NULL, &q, (long) derlen);
        if (es == NULL) {
            goto done;
        }

        ECDSA_SIG_get0(es, &r, &s);

        if (BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32)
                                              == 32)
        {
            *siglen = 64;
            rc = NGX_OK;
        }

        ECDSA_SIG_free(es);
        goto done;
    }

    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) == 1
        && EVP_DigestSign(md, sig, siglen, data, len) == 1)
    {
        rc = NGX_OK;
    }

done:

    if (md) {
        EVP_MD_CTX_free(md);
    }

    if (a->alg == NGX_HTTP_TOKENREFRESH_HS256) {
        EVP_PKEY_free(pkey);
    }

    ERR_clear_error();

    return rc;
}
