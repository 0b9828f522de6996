# A token variable has a value only while the request to the upstream is
# being built: never in a response nginx makes itself (502, 504, 499, an
# error page), in add_header, in an access log line, or in the access log
# line of a token subrequest (log_subrequest on).
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('http_config', ($block->http_config // '') . <<'_EOC_');
    log_format leak 'uri=$request_uri status=$status '
                    'auth=[$tokenrefresh_authorization] '
                    'at=[$tokenrefresh_access_token] '
                    'rt=[$tokenrefresh_refresh_token] '
                    'rtf=[$tokenrefresh_refresh_token_form] '
                    'atj=[$tokenrefresh_access_token_json] '
                    'ca=[$tokenrefresh_client_assertion]';
_EOC_

    $block->set_value('config', <<'_EOC_' . $block->config);
    access_log logs/leak.log leak;

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }
_EOC_
});

# every token the mock issued, access and refresh
sub issued_tokens {
    my $s = stats();
    return (@{ $s->{issued} }, @{ $s->{refresh_issued} });
}

# the tokens found in a text
sub leaked {
    my ($text) = @_;
    return grep { index($text, $_) >= 0 } issued_tokens();
}

sub access_log {
    my $f = "$Test::Nginx::Util::ServRoot/logs/leak.log";
    open my $fh, '<', $f or return '';
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s;
}

sub response_text {
    my ($r) = @_;
    return join "\n", $r->{status}, $r->{content} // $r->{body} // '',
        map { my $v = $r->{headers}{$_};
              "$_: " . (ref $v ? join(', ', @$v) : $v) }
        keys %{ $r->{headers} // {} };
}

{
    no strict 'refs';
    *{"Test::Nginx::Util::$_"} = \&$_
        for qw(issued_tokens leaked access_log response_text);
}

run_tests();

__DATA__

=== TEST 1: 502 from nginx (the upstream is down): no token in add_header or the access log
--- config
    location /down/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        add_header X-Leak "[$tokenrefresh_access_token]" always;
        add_header X-Leak-Auth "[$tokenrefresh_authorization]" always;
        proxy_pass http://127.0.0.1:1;
    }
--- init
my $r = hit(GET => '/down/a');
is($r->{status}, 502, '502 from nginx');
is($r->{headers}{'x-leak'}, '[]', 'the header is empty');
is(scalar(leaked(response_text($r))), 0, 'no token in the response');
ok(wait_until(sub { access_log() =~ m{uri=/down/a } }, 5), 'logged');
is(scalar(leaked(access_log())), 0, 'no token in the access log');
ok(scalar(issued_tokens()) > 0, 'there is a token to leak');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 2: 504 from nginx (the upstream is too slow): no token in add_header or the access log
--- config
    location /slow/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_read_timeout 200ms;
        add_header X-Leak "[$tokenrefresh_access_token]" always;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/slow/a?delay=2000');
is($r->{status}, 504, '504 from nginx');
is($r->{headers}{'x-leak'}, '[]', 'the header is empty');
is(scalar(leaked(response_text($r))), 0, 'no token in the response');
ok(wait_until(sub { access_log() =~ m{uri=/slow/a} }, 5), 'logged');
is(scalar(leaked(access_log())), 0, 'no token in the access log');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 3: 499 (the client went away): no token in the access log
--- config
    location /gone/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/gone/warm')->{status}, 200, 'logged in');
my $h = fire(GET => '/gone/a?delay=2000');
ok(wait_until(sub { grep { $_->{path} eq '/gone/a' } @{ requests() } }, 5),
   'at the API');
drop($h);
ok(wait_until(sub { access_log() =~ m{uri=/gone/a\?delay=2000 status=499} }, 5),
   'logged as 499');
is(scalar(leaked(access_log())), 0, 'no token in the access log');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 4: an error page nginx makes for the upstream's answer: no token
--- config
    location /ep/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_intercept_errors on;
        error_page 404 = @notfound;
        proxy_pass http://api;
    }

    location @notfound {
        add_header X-Leak "[$tokenrefresh_authorization]" always;
        return 404 "not found [$tokenrefresh_access_token]\n";
    }
--- init
my $r = hit(GET => '/ep/status/404');
is($r->{status}, 404, 'the error page');
is($r->{content}, "not found []\n", 'no token in its body');
is($r->{headers}{'x-leak'}, '[]', 'nor in its header');
is(scalar(leaked(response_text($r))), 0, 'no token anywhere in it');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 5: a successful answer: the access log line has no token
--- config
    location /ok/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        add_header X-Leak "[$tokenrefresh_access_token]" always;
        proxy_pass http://api;
    }
--- init
my $r = hit(GET => '/ok/a');
is($r->{status}, 200, 'served');
like($r->{content}, qr/"style":"bearer"/, 'the upstream got the token');
is($r->{headers}{'x-leak'}, '[]', 'the response header is empty');
ok(wait_until(sub { access_log() =~ m{uri=/ok/a } }, 5), 'logged');
is(scalar(leaked(access_log())), 0, 'no token in the access log');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 6: log_subrequest on: the token subrequests' log lines have no token
--- config
    log_subrequest on;

    location /sub/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
is(hit(GET => '/sub/a')->{status}, 200, 'logged in');
revoke();
is(hit(GET => '/sub/b')->{status}, 200, 'refreshed');
ok(wait_until(sub { access_log() =~ m{uri=/sub/b } }, 5), 'logged');
is(scalar(leaked(access_log())), 0, 'no token in the access log')
    or diag(access_log());
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
