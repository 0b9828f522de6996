# Users' sessions (issue 13): the app logs its user in through nginx, keeps
# a handle, and never sees a token; refreshes once per session across
# workers; a refused refresh, an unknown handle, a logout, idle and
# lifetime end a session with one documented answer.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;
use JSON::PP;

master_on();
workers(2);
worker_connections(1024);
no_shuffle();

my $json = JSON::PP->new->canonical;

# a user logs in through nginx: (status, decoded body, headers)
sub login {
    my ($email, %o) = @_;
    my $r = hit(POST => $o{uri} // '/login',
                headers => { 'Content-Type' => 'application/json',
                             %{ $o{headers} // {} } },
                body => $json->encode({ email => $email,
                                        password => $o{password}
                                                    // "secret-$email" }));
    my $body = eval { $json->decode($r->{content}) };
    return ($r->{status}, $body, $r->{headers}, $r->{content});
}

sub as_user {
    my ($method, $uri, $handle, %o) = @_;
    return hit($method => $uri,
               headers => { 'X-Session' => $handle, %{ $o{headers} // {} } },
               %o{grep { $_ ne 'headers' } keys %o});
}

sub jdecode { return eval { $json->decode($_[0]) } // {}; }

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_ for qw(login as_user jdecode);
}

add_block_preprocessor(sub {
    my $block = shift;

    return if $block->must_die;

    $block->set_value('http_config', <<'_EOC_' . ($block->http_config // ''))
    tokenrefresh_zone users:4m session_idle=1h session_lifetime=1d;
_EOC_
        unless ($block->http_config // '') =~ /tokenrefresh_zone users/;

    $block->set_value('config', <<'_EOC_' . ($block->config // ''));
    tokenrefresh_session_header X-Session;
    tokenrefresh_json_access_token /token;
    tokenrefresh_json_refresh_token /refreshToken;

    location = /login {
        tokenrefresh_session_login users;
        tokenrefresh_json_expires_in /expiresIn;
        tokenrefresh_session_handle_json session;
        tokenrefresh_session_keep locale $http_accept_language;
        proxy_set_header Accept-Encoding "";
        proxy_pass http://idp/api/tokens;
    }

    location = /_srefresh {
        internal;
        proxy_set_header Content-Type application/json;
        proxy_set_header Accept-Language $tokenrefresh_kept_locale;
        proxy_set_body '{"refreshToken":"$tokenrefresh_refresh_token_json"}';
        proxy_pass http://idp/api/tokens/refresh;
    }

    location = /logout {
        tokenrefresh_session_logout users revoke=/_revoke;
    }

    location = /_revoke {
        internal;
        proxy_set_body "token=$tokenrefresh_refresh_token_form&token_type_hint=refresh_token";
        proxy_pass http://idp/revoke;
    }
_EOC_
});

run_tests();

__DATA__

=== TEST 1: a login through nginx: the app gets the backend's answer without the tokens, and a handle
--- config
    location /api/ {
        tokenrefresh_session users;
        tokenrefresh_refresh /_srefresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my ($st, $body, $h, $raw) = login('ann@example.com',
                                  headers => { 'Accept-Language' => 'fr' });
is($st, 201, 'the backend status');
unlike($raw, qr/at-|rt-|"token"|refreshToken/, 'no token in the answer');
is($body->{user}{email}, 'ann@example.com', 'the rest of the answer is there');
is($body->{user}{locale}, 'fr', 'as the backend wrote it');
ok(defined $body->{expiresIn}, 'expiresIn kept');
like($body->{session} // '', qr/^[A-Za-z0-9_-]{43}$/, 'a 256-bit handle');
like($h->{'set-cookie'} // '', qr/^__Host-session=\Q$body->{session}\E; Path=\/; HttpOnly; Secure; SameSite=Strict$/,
     'the cookie, with its flags');
is($h->{'cache-control'}, 'no-store', 'not cached');
is($h->{'content-length'}, length $raw, 'the length of the new body');
my $r = as_user(GET => '/api/me', $body->{session});
is($r->{status}, 200, 'the handle gets the user to the API');
is(jdecode($r->{content})->{cred}, 'ann@example.com', "with the user's token");
my ($st2, $body2) = login('ann@example.com');
isnt($body2->{session}, $body->{session}, 'a new login, a new handle');
is(as_user(GET => '/api/me', $body->{session})->{status}, 200, 'both devices work');
--- request
GET /calls
--- response_body_like
^calls=2 login=2$
