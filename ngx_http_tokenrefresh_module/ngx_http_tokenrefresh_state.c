
/*
 * Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
 * BSD 2-Clause License: see the file LICENSE.
 *
 * The state file of a zone: what must survive a restart, above all the
 * newest refresh token of a provider that rotates them.  It is written by
 * the worker that stored a new token, before that worker releases the
 * lease, under a file lock so that two workers never write at once and the
 * last writer always writes the newest state: atomically (a temporary
 * file, fsync, rename), mode 0600, sealed with AES-256-GCM.  It is read
 * when a zone is created: at start, restart, or a reload that changes the
 * zone; a reload that keeps the zone keeps its newer state.
 *
 * Since 0.10 the state is a snapshot and a journal of the changes after
 * it (ngx_http_tokenrefresh_journal.c): the worker that stores a token
 * appends one frame, off its event loop, and the journal is merged into
 * the snapshot now and then.  This file reads both when a zone is created,
 * and writes a whole snapshot from the zone when a reload hands a zone
 * over or an operator changes it.  The formats are described in
 * ngx_http_tokenrefresh_records.c.
 *
 * The file is "TRS1" | nonce | ciphertext | tag, with the zone's name as
 * additional data, so that a file cannot be moved to another zone.
 */


#include "ngx_http_tokenrefresh_module.h"


#define NGX_HTTP_TOKENREFRESH_MAGIC      "TRS1"    /* the file's */
#define NGX_HTTP_TOKENREFRESH_MAX_STATE  (256 * 1024 * 1024)


static char *ngx_http_tokenrefresh_read_key(ngx_conf_t *cf, ngx_str_t *file,
    u_char *key);
static ngx_int_t ngx_http_tokenrefresh_state_read(ngx_str_t *path,
    ngx_pool_t *pool, ngx_str_t *data, ngx_log_t *log);
static ngx_int_t ngx_http_tokenrefresh_state_parse(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *plain, ngx_pool_t *pool,
    ngx_log_t *log);
static ngx_int_t ngx_http_tokenrefresh_state_merge(
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *plain,
    ngx_http_tokenrefresh_merge_t *m, ngx_pool_t *pool, ngx_log_t *log);
static void ngx_http_tokenrefresh_keep_aside(ngx_http_tokenrefresh_state_t *st,
    ngx_str_t *path, ngx_log_t *log);
static ngx_int_t ngx_http_tokenrefresh_get_session(
    ngx_http_tokenrefresh_reader_t *rd, ngx_pool_t *pool,
    ngx_http_tokenrefresh_session_t **ss);


/*
 * A secret from a file (the state key, a seed, an HMAC secret): refused if
 * group or others may read it, as sshd does with private keys, so that
 * "nginx -t" catches it.  Surrounding white space is trimmed.
 */

char *
ngx_http_tokenrefresh_read_secret(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *out)
{
    u_char           *p, *last;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    if (ngx_conf_full_name(cf->cycle, file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(file->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot open \"%V\"", file);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot stat \"%V\"", file);
        goto failed;
    }

    if (fi.st_mode & (S_IRWXG|S_IRWXO)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" holds a secret and may be read by group "
                           "or others: make it readable by its owner only "
                           "(chmod 600)", file);
        goto failed;
    }

    if (ngx_file_size(&fi) > 64 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is too large for a secret", file);
        goto failed;
    }

    out->data = ngx_pnalloc(cf->pool, (size_t) ngx_file_size(&fi) + 1);
    if (out->data == NULL) {
        goto failed;
    }

    n = ngx_read_fd(fd, out->data, (size_t) ngx_file_size(&fi));

    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot read \"%V\"", file);
        goto failed;
    }

    ngx_close_file(fd);

    p = out->data;
    last = p + n;

    while (p < last && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
    {
        p++;
    }

    while (last > p
           && (last[-1] == ' ' || last[-1] == '\t' || last[-1] == '\r'
               || last[-1] == '\n'))
    {
        last--;
    }

    out->data = p;
    out->len = last - p;

    if (out->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" is empty", file);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

failed:

    ngx_close_file(fd);

    return NGX_CONF_ERROR;
}


/*
 * state=path key=path of a zone.  The key is 32 bytes in 64 hex digits, as
 * "openssl rand -hex 32" writes them.
 */

/* a key file: 32 bytes in 64 hex digits, readable by its owner only */

static char *
ngx_http_tokenrefresh_read_key(ngx_conf_t *cf, ngx_str_t *file, u_char *key)
{
    ngx_int_t   n;
    ngx_str_t   secret;
    ngx_uint_t  i;

    if (ngx_http_tokenrefresh_read_secret(cf, file, &secret) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    i = 0;

    if (secret.len == 2 * NGX_HTTP_TOKENREFRESH_KEY_LEN) {
        for (/* void */; i < NGX_HTTP_TOKENREFRESH_KEY_LEN; i++) {
            n = ngx_hextoi(secret.data + 2 * i, 2);
            if (n == NGX_ERROR) {
                break;
            }

            key[i] = (u_char) n;
        }
    }

    ngx_explicit_memzero(secret.data, secret.len);

    if (i != NGX_HTTP_TOKENREFRESH_KEY_LEN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the key \"%V\" must be 32 bytes in 64 hex "
                           "digits, as \"openssl rand -hex 32\" writes",
                           file);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_tokenrefresh_state_conf(ngx_conf_t *cf,
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *path, ngx_str_t *key,
    ngx_str_t *old_key)
{
    u_char                         *p;
    char                           *real;
    ngx_file_info_t                 fi;
    ngx_http_tokenrefresh_state_t  *st;

    st = ngx_pcalloc(cf->pool, sizeof(ngx_http_tokenrefresh_state_t));
    if (st == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_tokenrefresh_read_key(cf, key, st->key) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (old_key->len) {
        if (ngx_http_tokenrefresh_read_key(cf, old_key, st->old_key)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        st->two_keys = 1;
    }

    if (ngx_conf_full_name(cf->cycle, path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    st->path = *path;


    st->lock.len = path->len + sizeof(".lock") - 1;
    st->lock.data = ngx_pnalloc(cf->pool, st->lock.len + 1);
    if (st->lock.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(st->lock.data, "%V.lock%Z", path);

    st->cycle = cf->cycle;

    st->journal.len = path->len + sizeof(".journal") - 1;
    st->journal.data = ngx_pnalloc(cf->pool, st->journal.len + 1);
    st->old.len = path->len + sizeof(".journal.old") - 1;
    st->old.data = ngx_pnalloc(cf->pool, st->old.len + 1);

    if (st->journal.data == NULL || st->old.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(st->journal.data, "%V.journal%Z", path);
    ngx_sprintf(st->old.data, "%V.journal.old%Z", path);

#if (NGX_THREADS) && defined(F_OFD_SETLKW)
    /* the journal is synced by a task of the default pool */
    st->thread_pool = ngx_thread_pool_add(cf, NULL);
    if (st->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }
#endif

    /* the directory, to make a rename durable */

    for (p = path->data + path->len; p > path->data && p[-1] != '/'; p--) {
        /* void */
    }

    st->dir.len = (p > path->data + 1) ? (size_t) (p - 1 - path->data) : 1;
    st->dir.data = ngx_pnalloc(cf->pool, st->dir.len + 1);
    if (st->dir.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(st->dir.data, path->data, st->dir.len);
    st->dir.data[st->dir.len] = '\0';

    /* found now, by "nginx -t", not after the first rotation is lost */

    if (ngx_file_info(st->dir.data, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "the directory of the state file \"%V\" does "
                           "not exist", path);
        return NGX_CONF_ERROR;
    }

    if (!ngx_is_dir(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the directory of the state file \"%V\" is not "
                           "a directory", path);
        return NGX_CONF_ERROR;
    }

    /* the file's real name: two zones must not share one by an alias */

    real = realpath((char *) st->dir.data, NULL);
    if (real == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "realpath(\"%s\") failed", st->dir.data);
        return NGX_CONF_ERROR;
    }

    st->real.len = ngx_strlen(real) + 1 + (path->data + path->len - p);
    st->real.data = ngx_pnalloc(cf->pool, st->real.len);
    if (st->real.data == NULL) {
        free(real);
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(st->real.data, "%s/%*s", real,
                (size_t) (path->data + path->len - p), p);

    free(real);

    zone->state = st;

    return NGX_CONF_OK;
}


/*
 * Called from the zone's init when the zone is new.  Whatever is wrong
 * with the file, nginx starts, with an empty zone, and says why.
 */

ngx_int_t
ngx_http_tokenrefresh_state_load(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log)
{
    ngx_int_t                       rc;
    ngx_str_t                       data, plain, sealed;
    ngx_uint_t                      n, folded;
    ngx_pool_t                     *pool;
    ngx_http_tokenrefresh_merge_t   m;
    ngx_http_tokenrefresh_state_t  *st;

    st = zone->state;
    ngx_str_null(&data);
    ngx_str_null(&plain);
    ngx_memzero(&m, sizeof(ngx_http_tokenrefresh_merge_t));

    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_tokenrefresh_state_read(&st->path, pool, &data, log);

    if (rc == NGX_ERROR) {
        goto rejected;
    }

    if (rc == NGX_OK) {
        if (data.len < sizeof(NGX_HTTP_TOKENREFRESH_MAGIC) - 1
            || ngx_memcmp(data.data, NGX_HTTP_TOKENREFRESH_MAGIC,
                          sizeof(NGX_HTTP_TOKENREFRESH_MAGIC) - 1)
               != 0)
        {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "tokenrefresh: state file \"%V\" of zone \"%V\" "
                          "is not a state file, starting with an empty zone",
                          &st->path, &zone->shm_zone->shm.name);
            goto rejected;
        }

        sealed.data = data.data + sizeof(NGX_HTTP_TOKENREFRESH_MAGIC) - 1;
        sealed.len = data.len - (sizeof(NGX_HTTP_TOKENREFRESH_MAGIC) - 1);

        rc = ngx_http_tokenrefresh_open_either(pool, st->key,
                                               st->two_keys ? st->old_key
                                                            : NULL,
                                               &st->aad, &sealed, &plain);

        if (rc != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "tokenrefresh: state file \"%V\" of zone \"%V\" "
                          "is corrupt, truncated, sealed with another key or "
                          "for another zone, or was tampered with; starting "
                          "with an empty zone",
                          &st->path, &zone->shm_zone->shm.name);
            ngx_str_null(&plain);
            goto rejected;
        }
    }

    rc = ngx_http_tokenrefresh_state_merge(zone, &plain, &m, pool, log);

    if (rc == NGX_DECLINED) {
        /* neither a snapshot nor a journal yet */
        ngx_destroy_pool(pool);
        return NGX_OK;
    }

    if (rc != NGX_OK) {
        goto rejected;
    }

    folded = 0;

    /*
     * the journals go into the snapshot; with a second key, everything is
     * sealed again under the first, so that the second can go
     */

    if ((m.journal[0].data || m.journal[1].data || st->two_keys)
        && !ngx_test_config)
    {
        folded = (ngx_http_tokenrefresh_journal_fold(zone, &m.out, log)
                  == NGX_OK);
    }

    rc = ngx_http_tokenrefresh_state_parse(zone, &m.out, pool, log);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: starting zone \"%V\" empty; give it "
                      "the size it had, and the files kept aside, to have "
                      "the credentials back",
                      &zone->shm_zone->shm.name);
        goto rejected;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: state file \"%V\" of zone \"%V\" "
                      "decrypts but does not parse, starting with an empty "
                      "zone", &st->path, &zone->shm_zone->shm.name);
        goto rejected;
    }

    zone->sh->journal_seq = m.seq;

    /*
     * a frame torn by a crash during an append would hide the frames
     * appended after it: it goes now, before any worker appends, if the
     * journal was not folded into the snapshot
     */

    for (n = 0; n < 2 && !ngx_test_config; n++) {
        if (m.good[n] == m.journal[n].len) {
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "tokenrefresh: the last %uz bytes of \"%s\" were a "
                      "torn frame (the machine stopped while it was "
                      "written), they are dropped",
                      m.journal[n].len - m.good[n],
                      n ? st->journal.data : st->old.data);

        if (!folded
            && truncate((char *) (n ? st->journal.data : st->old.data),
                        m.good[n])
               == -1)
        {
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "tokenrefresh: truncate(\"%s\") failed",
                          n ? st->journal.data : st->old.data);
        }
    }

    for (n = 0; n < 2; n++) {
        free(m.journal[n].data);
    }

    ngx_http_tokenrefresh_merge_free(&m);

    if (plain.data) {
        ngx_explicit_memzero(plain.data, plain.len);
    }

    if (data.data) {
        ngx_explicit_memzero(data.data, data.len);
    }

    ngx_destroy_pool(pool);

    return NGX_OK;

rejected:

    for (n = 0; n < 2; n++) {
        free(m.journal[n].data);
    }

    ngx_http_tokenrefresh_merge_free(&m);

    if (plain.data) {
        ngx_explicit_memzero(plain.data, plain.len);
    }

    if (data.data) {
        ngx_explicit_memzero(data.data, data.len);
    }

    ngx_destroy_pool(pool);

    /*
     * The next save would replace the files: they are kept aside instead,
     * as they may hold the only copy of a refresh token (under the right
     * key, say).  "nginx -t" changes nothing on disk.
     */

    if (ngx_test_config) {
        return NGX_OK;
    }

    ngx_http_tokenrefresh_keep_aside(st, &st->path, log);
    ngx_http_tokenrefresh_keep_aside(st, &st->old, log);
    ngx_http_tokenrefresh_keep_aside(st, &st->journal, log);

    return NGX_OK;
}


/*
 * The snapshot's content (plain, empty if there is no snapshot) and the
 * journals, merged into one "TRS3" content in m->out.  NGX_DECLINED: no
 * state at all.
 */

static ngx_int_t
ngx_http_tokenrefresh_state_merge(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *plain, ngx_http_tokenrefresh_merge_t *m, ngx_pool_t *pool,
    ngx_log_t *log)
{
    ngx_int_t                       rc;
    ngx_uint_t                      n, found;
    ngx_http_tokenrefresh_state_t  *st;

    st = zone->state;
    found = (plain->len != 0);

    for (n = 0; n < 2; n++) {
        rc = ngx_http_tokenrefresh_journal_read(n ? &st->journal : &st->old,
                                                &m->journal[n].data,
                                                &m->journal[n].len, log);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        found |= (rc == NGX_OK);
    }

    if (!found) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tokenrefresh: no state file \"%V\" yet", &st->path);
        return NGX_DECLINED;
    }

    m->aad = st->journal_aad;
    m->key = st->key;
    m->old_key = st->two_keys ? st->old_key : NULL;
    m->max_token_size = zone->max_token_size;
    m->now = ngx_http_tokenrefresh_now();
    m->idle = zone->session_idle;
    m->lifetime = zone->session_lifetime;
    m->snapshot = *plain;

    if (ngx_http_tokenrefresh_merge(m) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: the state of zone \"%V\" in \"%V\" and "
                      "its journal cannot be read: %s; starting with an "
                      "empty zone", &zone->shm_zone->shm.name, &st->path,
                      m->failed ? m->failed : "out of memory");
        return NGX_ERROR;
    }

    if (m->frames || m->expired) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "tokenrefresh: %ui journal frames of zone \"%V\" read, "
                      "%ui expired sessions left out",
                      m->frames, &zone->shm_zone->shm.name, m->expired);
    }

    return NGX_OK;
}


/*
 * A rejected file is linked to a name of its own, never over one kept
 * before (a wrong key, then a file saved under it, then the right key
 * again): link() refuses a name that exists, where rename() would
 * replace it.
 */

static void
ngx_http_tokenrefresh_keep_aside(ngx_http_tokenrefresh_state_t *st,
    ngx_str_t *path, ngx_log_t *log)
{
    ngx_str_t        aside;
    ngx_uint_t       n;
    ngx_file_info_t  fi;

    if (ngx_link_info(path->data, &fi) == NGX_FILE_ERROR) {
        return;
    }

    aside.len = path->len + sizeof(".rejected.") + NGX_INT_T_LEN;
    aside.data = ngx_alloc(aside.len, log);
    if (aside.data == NULL) {
        st->blocked = 1;
        return;
    }

    for (n = 0; n < 1000; n++) {

        if (n == 0) {
            ngx_sprintf(aside.data, "%V.rejected%Z", path);

        } else {
            ngx_sprintf(aside.data, "%V.rejected.%ui%Z", path, n);
        }

        if (link((char *) path->data, (char *) aside.data) == 0) {
            break;
        }

        if (ngx_errno != NGX_EEXIST) {
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "tokenrefresh: cannot link \"%s\" to \"%s\"",
                          path->data, aside.data);
            n = 1000;
            break;
        }
    }

    if (n < 1000 && ngx_delete_file(path->data) != NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "tokenrefresh: the rejected state file was kept as "
                      "\"%s\"", aside.data);

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: the rejected state file \"%V\" could "
                      "not be kept aside; it is left where it is, and the "
                      "zone does not save its state until it is moved",
                      path);
        st->blocked = 1;
    }

    ngx_free(aside.data);
}


static ngx_int_t
ngx_http_tokenrefresh_state_read(ngx_str_t *path, ngx_pool_t *pool,
    ngx_str_t *data, ngx_log_t *log)
{
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_file_info_t  fi;

    /*
     * Never through a symbolic link: the master reads the file as root,
     * and makes it 0600; whoever may write the directory could otherwise
     * have it change the mode of any file.
     */

    fd = ngx_open_file(path->data, NGX_FILE_RDONLY|O_NOFOLLOW,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        if (ngx_errno == ELOOP) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "tokenrefresh: the state file \"%s\" is a "
                          "symbolic link, it is not read, and the next save "
                          "replaces the link with a file; starting with an "
                          "empty zone", path->data);
            return NGX_DECLINED;
        }

        if (ngx_errno == NGX_ENOENT) {
            return NGX_DECLINED;
        }

        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: cannot open the state file \"%s\", "
                      "starting with an empty zone", path->data);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || !ngx_is_file(&fi)
        || ngx_file_size(&fi) > NGX_HTTP_TOKENREFRESH_MAX_STATE)
    {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: state file \"%s\" is unreadable or "
                      "too large, starting with an empty zone", path->data);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    /* sealed, but the file is still nobody else's business */

    if ((fi.st_mode & (S_IRWXG|S_IRWXO)) && !ngx_test_config) {
        if (fchmod(fd, 0600) == -1) {
            ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                          "tokenrefresh: state file \"%s\" may be read by "
                          "group or others, and its mode cannot be changed",
                          path->data);

        } else {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "tokenrefresh: state file \"%s\" could be read "
                          "by group or others, its mode is now 0600",
                          path->data);
        }
    }

    data->len = (size_t) ngx_file_size(&fi);
    data->data = ngx_pnalloc(pool, data->len + 1);
    if (data->data == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    n = ngx_read_fd(fd, data->data, data->len);

    ngx_close_file(fd);

    if (n != (ssize_t) data->len) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: could not read the state file \"%s\", "
                      "starting with an empty zone", path->data);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A merged "TRS3" content into the zone.  Every record is checked before
 * any credential is created, so a content that does not parse leaves the
 * zone empty.  The named credentials come first, all or nothing: a
 * partial zone would lose the rest.  The sessions follow, the most
 * recently used first, as many as fit.
 */

static ngx_int_t
ngx_http_tokenrefresh_state_parse(ngx_http_tokenrefresh_zone_t *zone,
    ngx_str_t *plain, ngx_pool_t *pool, ngx_log_t *log)
{
    u_char                           *start;
    uint64_t                          floor, count, spent, i, v, op;
    ngx_str_t                         magic, name, digest, seed;
    ngx_uint_t                        sessions, dropped;
    ngx_http_tokenrefresh_token_t     tok;
    ngx_http_tokenrefresh_reader_t    rd, one;
    ngx_http_tokenrefresh_scan_t    rec;
    ngx_http_tokenrefresh_session_t  *ss;

    rd.pos = plain->data;
    rd.last = plain->data + plain->len;

    if (ngx_http_tokenrefresh_get_str(&rd, &magic, 0, 4) != NGX_OK
        || ngx_memcmp(magic.data, NGX_HTTP_TOKENREFRESH_CONTENT, 4) != 0
        || ngx_http_tokenrefresh_get(&rd, &floor, 8) != NGX_OK
        || ngx_http_tokenrefresh_get(&rd, &count, 4) != NGX_OK
        || ngx_http_tokenrefresh_get(&rd, &spent, 4) != NGX_OK
        || spent > NGX_HTTP_TOKENREFRESH_SPENT
        || (uint64_t) (rd.last - rd.pos)
           < spent * NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
    {
        return NGX_ERROR;
    }

    rd.pos += spent * NGX_HTTP_TOKENREFRESH_DIGEST_LEN;
    start = rd.pos;

    /* a first pass only checks */

    for (i = 0; i < count; i++) {
        if (ngx_http_tokenrefresh_get(&rd, &v, 8) != NGX_OK
            || ngx_http_tokenrefresh_get(&rd, &op, 1) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (op == NGX_HTTP_TOKENREFRESH_OP_GONE) {
            if (ngx_http_tokenrefresh_get_str(&rd, &digest, 0,
                                              NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        if (op != NGX_HTTP_TOKENREFRESH_OP_PUT
            || ngx_http_tokenrefresh_record_scan(&rd, zone->max_token_size,
                                                 0, &rec)
               != NGX_OK
            || (rec.access.len
                && ngx_http_tokenrefresh_check_token(&rec.access,
                                                     zone->max_token_size))
            || (rec.refresh.len
                && ngx_http_tokenrefresh_check_token(&rec.refresh,
                                                     zone->max_token_size)))
        {
            return NGX_ERROR;
        }
    }

    if (rd.pos != rd.last) {
        return NGX_ERROR;
    }

    /* the second pass restores */

    rd.pos = plain->data + 4 + 8 + 4 + 4;

    for (i = 0; i < spent; i++) {
        (void) ngx_http_tokenrefresh_get_str(&rd, &digest, 0,
                                             NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
        ngx_http_tokenrefresh_spend(zone, digest.data);
    }

    sessions = 0;
    dropped = 0;
    rd.pos = start;

    for (i = 0; i < count; i++) {
        (void) ngx_http_tokenrefresh_get(&rd, &v, 8);
        (void) ngx_http_tokenrefresh_get(&rd, &op, 1);

        if (op == NGX_HTTP_TOKENREFRESH_OP_GONE) {
            rd.pos += NGX_HTTP_TOKENREFRESH_DIGEST_LEN;
            continue;
        }

        (void) ngx_http_tokenrefresh_record_scan(&rd, zone->max_token_size,
                                                 0, &rec);

        if (dropped) {
            dropped += rec.session;
            continue;
        }

        one.pos = rec.data;
        one.last = rec.data + rec.len;

        (void) ngx_http_tokenrefresh_get_str(&one, &name, 2,
                                             NGX_HTTP_TOKENREFRESH_MAX_NAME);
        (void) ngx_http_tokenrefresh_get_str(&one, &tok.access_token, 4,
                                             zone->max_token_size);
        (void) ngx_http_tokenrefresh_get_str(&one, &tok.refresh_token, 4,
                                             zone->max_token_size);
        (void) ngx_http_tokenrefresh_get(&one, &v, 8);
        tok.issued = (int64_t) v;
        (void) ngx_http_tokenrefresh_get(&one, &v, 8);
        tok.expires = (int64_t) v;
        (void) ngx_http_tokenrefresh_get(&one, &v, 8);
        (void) ngx_http_tokenrefresh_get_str(&one, &seed, 0,
                                             NGX_HTTP_TOKENREFRESH_DIGEST_LEN);

        if (ngx_http_tokenrefresh_get_session(&one, pool, &ss) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ngx_http_tokenrefresh_restore(zone, &name, &tok, v, seed.data,
                                          ss, log)
            == NGX_OK)
        {
            sessions += (ss != NULL);
            continue;
        }

        if (ss) {
            /* the least recently used sessions stay out */
            dropped = 1;
            continue;
        }

        ngx_http_tokenrefresh_forget_all(zone);

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: the state file \"%V\" (%uL records) "
                      "does not fit zone \"%V\" of %uz bytes: nothing is "
                      "restored, and nothing evicted",
                      &zone->state->path, count, &zone->shm_zone->shm.name,
                      zone->shm_zone->shm.size);

        return NGX_DECLINED;
    }

    if (dropped) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "tokenrefresh: zone \"%V\" of %uz bytes has no room "
                      "for %ui users' sessions of its state file, the least "
                      "recently used; they are not restored",
                      &zone->shm_zone->shm.name, zone->shm_zone->shm.size,
                      dropped);
    }

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "tokenrefresh: %ui credentials of zone \"%V\" restored "
                  "from \"%V\" (%ui of them users' sessions)",
                  zone->sh->count, &zone->shm_zone->shm.name,
                  &zone->state->path, sessions);

    return NGX_OK;
}


/*
 * Writes the state of the whole zone.  The file lock is taken before the
 * snapshot, so that of two workers that stored tokens one after the other,
 * the second writes both tokens, never the first an older state after it.
 */

ngx_int_t
ngx_http_tokenrefresh_state_save(ngx_http_tokenrefresh_zone_t *zone,
    ngx_log_t *log)
{
    u_char                         *p;
    size_t                          len;
    ngx_fd_t                        lock, fd;
    ngx_int_t                       rc;
    ngx_str_t                       plain, sealed, tmp;
    uint64_t                        seq;
    ngx_uint_t                      i, first;
    ngx_pool_t                     *pool;
    ngx_queue_t                    *q;
    ngx_http_tokenrefresh_node_t   *tn;
    ngx_http_tokenrefresh_state_t  *st;
    ngx_http_tokenrefresh_shctx_t  *sh;

    st = zone->state;
    sh = zone->sh;
    rc = NGX_ERROR;
    fd = NGX_INVALID_FILE;

    if (st->blocked) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: the state of zone \"%V\" is not saved: "
                      "a rejected state file is still at \"%V\"",
                      &zone->shm_zone->shm.name, &st->path);
        return NGX_ERROR;
    }

    pool = ngx_create_pool(4096, log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    plain.data = NULL;

    lock = ngx_open_file(st->lock.data, NGX_FILE_RDWR|O_NOFOLLOW,
                         NGX_FILE_CREATE_OR_OPEN, 0600);
    if (lock == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: cannot open \"%s\"", st->lock.data);
        goto failed;
    }

    /* byte 1: a compaction in a thread may be replacing the snapshot */

    if (ngx_http_tokenrefresh_lock_range(lock, 1, F_WRLCK) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: cannot lock \"%s\"", st->lock.data);
        goto failed;
    }

    /*
     * the snapshot, under the zone's lock: it holds all that the journal's
     * frames made before it said (they were made under this lock too)
     */

    ngx_shmtx_lock(&zone->shpool->mutex);

    len = 4 + 8 + 4 + 4
          + NGX_HTTP_TOKENREFRESH_SPENT * NGX_HTTP_TOKENREFRESH_DIGEST_LEN;

    for (q = ngx_queue_head(&sh->lru);
         q != ngx_queue_sentinel(&sh->lru);
         q = ngx_queue_next(q))
    {
        tn = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);
        len += 8 + 1 + ngx_http_tokenrefresh_record_len(tn);
    }

    plain.data = ngx_pnalloc(pool, len);
    if (plain.data == NULL) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        goto failed;
    }

    seq = ngx_http_tokenrefresh_journal_seq(sh);

    p = ngx_cpymem(plain.data, NGX_HTTP_TOKENREFRESH_CONTENT, 4);
    p = ngx_http_tokenrefresh_put(p, seq, 8);
    p = ngx_http_tokenrefresh_put(p, sh->count, 4);
    p = ngx_http_tokenrefresh_put(p, sh->spent_count, 4);

    /* the oldest first: a merge keeps the last ones */

    first = (sh->spent_count == NGX_HTTP_TOKENREFRESH_SPENT)
            ? sh->spent_next : 0;

    for (i = 0; i < sh->spent_count; i++) {
        p = ngx_cpymem(p, sh->spent[(first + i) % NGX_HTTP_TOKENREFRESH_SPENT],
                       NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    }

    for (q = ngx_queue_head(&sh->lru);
         q != ngx_queue_sentinel(&sh->lru);
         q = ngx_queue_next(q))
    {
        tn = ngx_queue_data(q, ngx_http_tokenrefresh_node_t, lru);

        p = ngx_http_tokenrefresh_put(p, seq, 8);
        *p++ = NGX_HTTP_TOKENREFRESH_OP_PUT;
        p = ngx_http_tokenrefresh_record_write(p, tn);
    }

    /* the sessions deleted so far are not in it: nothing to say of them */
    sh->gone_count = 0;
    sh->gone_lost = 0;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    plain.len = p - plain.data;

    if (ngx_http_tokenrefresh_seal(pool, st->key, &st->aad, &plain, &sealed)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: could not seal the state of zone "
                      "\"%V\"", &zone->shm_zone->shm.name);
        goto failed;
    }

    /* a temporary file, its data on disk, then the rename */

    tmp.len = st->path.len + sizeof(".tmp") + NGX_INT64_LEN;
    tmp.data = ngx_pnalloc(pool, tmp.len);
    if (tmp.data == NULL) {
        goto failed;
    }

    ngx_sprintf(tmp.data, "%V.%P.tmp%Z", &st->path, ngx_pid);

    /* a file of its own: never one that somebody put at this name */

    (void) ngx_delete_file(tmp.data);

    fd = ngx_open_file(tmp.data, NGX_FILE_WRONLY|O_NOFOLLOW|O_EXCL,
                       NGX_FILE_CREATE_OR_OPEN, 0600);
    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: cannot create \"%s\"", tmp.data);
        goto failed;
    }

    if (ngx_write_fd(fd, NGX_HTTP_TOKENREFRESH_MAGIC, 4) != 4
        || ngx_write_fd(fd, sealed.data, sealed.len) != (ssize_t) sealed.len
        || fsync(fd) == -1)
    {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: cannot write \"%s\"", tmp.data);
        (void) ngx_delete_file(tmp.data);
        goto failed;
    }

    ngx_close_file(fd);
    fd = NGX_INVALID_FILE;

    if (ngx_rename_file(tmp.data, st->path.data) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "tokenrefresh: cannot rename \"%s\" to \"%s\"",
                      tmp.data, st->path.data);
        (void) ngx_delete_file(tmp.data);
        goto failed;
    }

    /* the rename itself, on disk */

    fd = ngx_open_file(st->dir.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd != NGX_INVALID_FILE) {
        (void) fsync(fd);
    }

    rc = NGX_OK;

failed:

    if (fd != NGX_INVALID_FILE) {
        ngx_close_file(fd);
    }

    if (lock != NGX_INVALID_FILE) {
        /* closing the descriptor releases the lock */
        ngx_close_file(lock);
    }

    if (plain.data) {
        ngx_explicit_memzero(plain.data, plain.len);
    }

    ngx_destroy_pool(pool);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "tokenrefresh: the state of zone \"%V\" was not saved "
                      "to \"%V\"; a restart now would use older tokens",
                      &zone->shm_zone->shm.name, &st->path);
    }

    return rc;
}


/*
 * A record's session part: checked only (pool NULL), or read into a copy
 * that ngx_http_tokenrefresh_restore() takes; *ss is NULL for a named
 * credential.
 */

static ngx_int_t
ngx_http_tokenrefresh_get_session(ngx_http_tokenrefresh_reader_t *rd,
    ngx_pool_t *pool, ngx_http_tokenrefresh_session_t **ss)
{
    uint64_t                          kind, created, last;
    ngx_str_t                         subject, kept;
    ngx_http_tokenrefresh_session_t  *s;

    *ss = NULL;

    if (ngx_http_tokenrefresh_get(rd, &kind, 1) != NGX_OK || kind > 1) {
        return NGX_ERROR;
    }

    if (kind == 0) {
        return NGX_OK;
    }

    if (ngx_http_tokenrefresh_get(rd, &created, 8) != NGX_OK
        || ngx_http_tokenrefresh_get(rd, &last, 8) != NGX_OK
        || ngx_http_tokenrefresh_get_str(rd, &subject, 0,
                                         NGX_HTTP_TOKENREFRESH_DIGEST_LEN)
           != NGX_OK
        || ngx_http_tokenrefresh_get_str(rd, &kept, 2, 65535) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (pool == NULL) {
        /* a placeholder: the first pass only needs to know it is one */
        *ss = (ngx_http_tokenrefresh_session_t *) rd;
        return NGX_OK;
    }

    s = ngx_palloc(pool, offsetof(ngx_http_tokenrefresh_session_t, kept)
                         + kept.len);
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->created = (int64_t) created;
    s->last = (int64_t) last;
    s->saved = (int64_t) last;
    ngx_memcpy(s->subject, subject.data, NGX_HTTP_TOKENREFRESH_DIGEST_LEN);
    s->kept_len = (u_short) kept.len;
    ngx_memcpy(s->kept, kept.data, kept.len);

    *ss = s;

    return NGX_OK;
}


/*
 * Once the zone has its name: the additional data of the snapshot and of
 * the journal, the magic and the zone's name, of any length.
 */

char *
ngx_http_tokenrefresh_state_name(ngx_conf_t *cf,
    ngx_http_tokenrefresh_zone_t *zone, ngx_str_t *name)
{
    ngx_http_tokenrefresh_state_t  *st;

    st = zone->state;

    st->aad.len = sizeof(NGX_HTTP_TOKENREFRESH_MAGIC) - 1 + name->len;
    st->aad.data = ngx_pnalloc(cf->pool, st->aad.len);
    st->journal_aad.len = 4 + name->len;
    st->journal_aad.data = ngx_pnalloc(cf->pool, st->journal_aad.len);

    if (st->aad.data == NULL || st->journal_aad.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(ngx_cpymem(st->aad.data, NGX_HTTP_TOKENREFRESH_MAGIC,
                          sizeof(NGX_HTTP_TOKENREFRESH_MAGIC) - 1),
               name->data, name->len);

    ngx_memcpy(ngx_cpymem(st->journal_aad.data, "TRJ1", 4),
               name->data, name->len);

    return NGX_CONF_OK;
}
