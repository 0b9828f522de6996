#!/usr/bin/perl
# A stateful, honest mock identity provider and API for the test suite and
# the demo.  One process, two ports, shared state:
#
#   identity provider (--idp-port)
#     POST /token          OAuth 2.0 token endpoint (RFC 6749): grant types
#                          client_credentials, password, refresh_token
#     POST /api/tokens     a custom login API: JSON {"email","password"} in,
#                          {"token","refreshToken"} out
#     POST /api/tokens/refresh   its refresh: JSON {"refreshToken"} in
#                          (a rotation stays in the login's grant: a spent
#                          refresh token coming back kills the grant)
#     POST /revoke         token revocation (RFC 7009): form token=...;
#                          a refresh token's whole grant dies
#     POST /nested         {"data":{"accessToken","refreshToken",
#                          "accessTokenExp"}} (milliseconds since the epoch)
#     /_mock/...           control: config, reset, revoke, stats, requests
#
#   API (--api-port)
#     any path             200 with a JSON echo if the request carries a
#                          token this provider issued that has neither
#                          expired nor been revoked; 401 otherwise
#
# Everything is event driven (IO::Poll), so hundreds of connections and
# slow answers do not block each other.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use strict;
use warnings;

use IO::Socket::INET;
use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP);
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use Time::HiRes qw(time);
use Digest::SHA qw(sha256_hex hmac_sha256);
use MIME::Base64 qw(encode_base64url);
use JSON::PP;
use Getopt::Long;

my ($idp_port, $api_port, $pidfile, $corpus) = (19850, 19860, undef, undef);
my $host = '127.0.0.1';

GetOptions('idp-port=i' => \$idp_port, 'api-port=i' => \$api_port,
           'pidfile=s' => \$pidfile, 'host=s' => \$host,
           'corpus=s' => \$corpus)
    or die "usage: $0 --idp-port N --api-port N [--pidfile F]\n";

$SIG{PIPE} = 'IGNORE';

my $json = JSON::PP->new->canonical->allow_nonref;

my (%cfg, %st);

sub defaults {
    return (
        delay_ms      => 0,       # answer token requests after this long
        lifetime      => 3600,    # seconds
        jwt           => 0,       # access tokens are JWTs with "exp"
        expires       => 'in',    # in | none: how expiry is announced
        refresh_rt    => 1,       # a refresh returns a new refresh token
        rotate        => 0,       # a used refresh token dies
        reuse_revokes => 1,       # a dead one coming back kills its grant
        fault         => '',      # see fault() below
        fault_count   => 0,       # 0: every token call; N: the next N
        fault_grant   => '',      # only this grant type faults
        retry_after   => '',      # Retry-After on a faulty answer
        api_reject    => 0,       # the API rejects every token
        api_delay_ms  => 0,
        refresh_needs_access => 0,   # /api/tokens/refresh wants "token"
        api_limit_rate => '',     # X-Accel-Limit-Rate on the API's 401
        token_pad     => 0,       # extra bytes in each access token
    );
}

sub reset_state {
    %cfg = defaults();
    %st = (
        seq        => 0,
        access     => {},     # token -> { exp, revoked, cred, n }
        refresh    => {},     # token -> { cred, dead, grant }
        grants     => 0,      # logins (and seeds) so far
        revoked    => {},     # grant -> 1: killed for a reuse
        calls      => 0,
        by_grant   => {},
        by_cred    => {},
        by_path    => {},
        reuse      => 0,      # a dead refresh token came back
        receiving  => {},
        api        => { ok => 0, unauthorized => 0 },
        requests   => [],     # the last requests seen, both ports
        inflight   => 0,
        max_inflight => 0,
    );
}

reset_state();

my $idp = IO::Socket::INET->new(LocalAddr => $host, LocalPort => $idp_port,
                                Listen => 1024, ReuseAddr => 1, Blocking => 0)
    or die "mock: cannot listen on $idp_port: $!\n";
my $api = IO::Socket::INET->new(LocalAddr => $host, LocalPort => $api_port,
                                Listen => 1024, ReuseAddr => 1, Blocking => 0)
    or die "mock: cannot listen on $api_port: $!\n";

if ($pidfile) {
    open my $fh, '>', $pidfile or die "mock: $pidfile: $!\n";
    print $fh "$$\n";
    close $fh;
}

# whoever started it waits for this line (t/TokenRefresh.pm)
$| = 1;
print "ready\n";
open STDOUT, '>', '/dev/null';

$SIG{TERM} = $SIG{INT} = sub { unlink $pidfile if $pidfile; exit 0 };

my $poll = IO::Poll->new;
$poll->mask($idp => POLLIN);
$poll->mask($api => POLLIN);

my %conn;        # fileno -> connection state
my @timers;      # [ due, code ]

# the mock belongs to the process that started it: when that process is
# gone (a test file that died), so is the mock
my $parent = getppid();

while (1) {
    exit 0 if getppid() != $parent || getppid() == 1;

    my $timeout = 1;
    if (@timers) {
        @timers = sort { $a->[0] <=> $b->[0] } @timers;
        $timeout = $timers[0][0] - time;
        $timeout = 0 if $timeout < 0;
    }

    my $n = $poll->poll($timeout);

    for my $lsock ($idp, $api) {
        next unless $poll->events($lsock) & POLLIN;
        while (my $c = $lsock->accept) {
            $c->blocking(0);
            $conn{fileno $c} = { sock => $c, in => '', out => '',
                                 port => ($lsock == $idp ? 'idp' : 'api'),
                                 busy => 0, close => 0 };
            $poll->mask($c => POLLIN);
        }
    }

    for my $c (values %conn) {
        my $ev = $poll->events($c->{sock});
        next unless $ev;
        if ($ev & (POLLIN | POLLHUP | POLLERR)) {
            my $r = sysread($c->{sock}, my $buf, 65536);
            if (!defined $r) {
                close_conn($c) unless $! == EAGAIN || $! == EINTR;
                next;
            }
            if ($r == 0) {
                $c->{eof} = 1;
                if ($c->{busy}) {
                    # the answer is still due (a delay, a hang): stop
                    # polling for a read that would return at once, forever
                    $poll->mask($c->{sock} => 0);
                } else {
                    close_conn($c);
                }
                next;
            }
            $c->{in} .= $buf;
            process($c);
        }
        if ($ev & POLLOUT) {
            flush($c);
        }
    }

    my $now = time;
    while (@timers && $timers[0][0] <= $now) {
        my $t = shift @timers;
        $t->[1]->();
    }
}

sub close_conn {
    my ($c) = @_;
    $poll->remove($c->{sock});
    delete $conn{fileno $c->{sock}};
    close $c->{sock};
    $c->{closed} = 1;
}

sub flush {
    my ($c) = @_;
    return if $c->{closed};
    while (length $c->{out}) {
        my $w = syswrite($c->{sock}, $c->{out});
        if (!defined $w) {
            if ($! == EAGAIN || $! == EWOULDBLOCK) {
                $poll->mask($c->{sock} => POLLIN | POLLOUT);
                return;
            }
            close_conn($c);
            return;
        }
        substr($c->{out}, 0, $w, '');
    }
    $poll->mask($c->{sock} => $c->{eof} ? 0 : POLLIN);
    if ($c->{close} || $c->{eof}) {
        close_conn($c);
    }
}

# parse as many complete requests as the buffer holds, one at a time
sub process {
    my ($c) = @_;

    while (!$c->{busy} && !$c->{closed}) {
        my $i = index($c->{in}, "\r\n\r\n");
        return if $i < 0;

        my $head = substr($c->{in}, 0, $i);
        my ($line, @hl) = split /\r\n/, $head;
        my ($method, $target, $proto) = split / /, $line;
        my %h;
        my @raw;
        for (@hl) {
            my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
            push @raw, [$k, $v];
            $k = lc $k;
            $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
        }

        my $rest = substr($c->{in}, $i + 4);
        my $body = '';

        if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
            my $pos = 0;
            while (1) {
                my $e = index($rest, "\r\n", $pos);
                return if $e < 0;
                my $len = hex substr($rest, $pos, $e - $pos);
                if ($len == 0) {
                    # no trailers expected; tolerate them
                    my $t = index($rest, "\r\n\r\n", $e - 2 < 0 ? 0 : $e - 2);
                    return if $t < 0;
                    $pos = $t + 4;
                    last;
                }
                return if length($rest) < $e + 2 + $len + 2;
                $body .= substr($rest, $e + 2, $len);
                $pos = $e + 2 + $len + 2;
            }
            $c->{in} = substr($rest, $pos);

        } else {
            my $len = $h{'content-length'} // 0;
            if (length($rest) < $len) {
                # the head is here, the body is still arriving
                $st{receiving}{(split /\?/, $target)[0]} = 1;
                return;
            }
            $body = substr($rest, 0, $len);
            $c->{in} = substr($rest, $len);
        }

        my ($path, $query) = split /\?/, $target, 2;
        my $req = { method => $method, path => $path, query => $query // '',
                    proto => $proto, headers => \%h, body => $body,
                    port => $c->{port}, line => $line, raw => \@raw };

        my $keep = ($proto eq 'HTTP/1.1')
                   ? (($h{connection} // '') !~ /close/i)
                   : (($h{connection} // '') =~ /keep-alive/i);
        $c->{keep} = $keep;
        $c->{busy} = 1;

        record($req);

        if ($c->{port} eq 'idp') {
            idp($c, $req);
        } else {
            api($c, $req);
        }
    }
}

sub record {
    my ($req) = @_;
    my $r = $st{requests};
    # "line" and "raw" are the bytes as they came: the request line, and
    # the header lines in order, duplicates included
    push @$r, { port => $req->{port}, method => $req->{method},
                path => $req->{path}, query => $req->{query},
                line => $req->{line}, raw => $req->{raw},
                headers => $req->{headers},
                body => length($req->{body}) <= 4096 ? $req->{body} : undef,
                body_len => length $req->{body},
                body_sha => sha256_hex($req->{body}) };
    shift @$r while @$r > 5000;
    $st{by_api_path}{$req->{path}}++ if $req->{port} eq 'api';
}

# send a complete answer, now or after a delay
sub respond {
    my ($c, $status, $headers, $body, $delay) = @_;
    my $send = sub {
        return if $c->{closed};
        my $reason = { 200 => 'OK', 201 => 'Created', 400 => 'Bad Request',
                       401 => 'Unauthorized', 404 => 'Not Found',
                       500 => 'Internal Server Error', 502 => 'Bad Gateway',
                       503 => 'Service Unavailable' }->{$status} // 'Status';
        my $out = "HTTP/1.1 $status $reason\r\n";
        my %hh = (%{ $headers // {} });
        $hh{'Content-Length'} //= length $body;
        $hh{'Connection'} = $c->{keep} ? 'keep-alive' : 'close';
        $out .= "$_: $hh{$_}\r\n" for sort keys %hh;
        $out .= "\r\n$body";
        $c->{out} .= $out;
        $c->{busy} = 0;
        $c->{close} = 1 unless $c->{keep};
        flush($c);
        process($c) if !$c->{closed} && length $c->{in};
        close_conn($c) if !$c->{closed} && $c->{eof} && !$c->{busy};
    };
    if ($delay && $delay > 0) {
        push @timers, [ time + $delay / 1000, $send ];
    } else {
        $send->();
    }
}

sub json_response {
    my ($c, $status, $data, $delay, $extra) = @_;
    respond($c, $status, { 'Content-Type' => 'application/json',
                           %{ $extra // {} } },
            $json->encode($data), $delay);
}

sub form {
    my ($s) = @_;
    my %f;
    for (split /&/, $s // '') {
        my ($k, $v) = split /=/, $_, 2;
        next unless defined $k;
        for ($k, $v) {
            next unless defined;
            tr/+/ /;
            s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
        }
        $f{$k} = $v;
    }
    return \%f;
}

sub new_token {
    my ($kind, $cred) = @_;
    my $n = ++$st{seq};
    my $rand = sha256_hex("$kind$n" . rand() . time);
    if ($kind eq 'access' && $cfg{jwt}) {
        my $exp = int(time + $cfg{lifetime});
        my $hdr = encode_base64url($json->encode({ alg => 'HS256',
                                                   typ => 'JWT' }));
        my $pl = encode_base64url($json->encode({ sub => $cred, exp => $exp,
                                                  jti => $n }));
        my $sig = encode_base64url(hmac_sha256("$hdr.$pl", 'mock-secret'));
        return "$hdr.$pl.$sig";
    }
    my $t = ($kind eq 'access' ? 'at' : 'rt') . "-$n-" . substr($rand, 0, 24);
    $t .= 'x' x $cfg{token_pad} if $kind eq 'access' && $cfg{token_pad};
    return $t;
}

# a fault, if one is configured for this grant; returns true if it answered
sub fault {
    my ($c, $grant, $delay) = @_;
    my $f = $cfg{fault} or return 0;
    return 0 if $cfg{fault_grant} && $cfg{fault_grant} ne $grant;
    if ($cfg{fault_count}) {
        $cfg{fault_count}--;
        $cfg{fault} = '' if $cfg{fault_count} == 0;
    }
    my %ra = length $cfg{retry_after} ? ('Retry-After' => $cfg{retry_after})
                                      : ();
    if ($f eq 'hang') {
        $c->{busy} = 1;          # never answers
        return 1;
    }
    if ($f eq 'reset') {
        close_conn($c);
        return 1;
    }
    if ($f =~ /^status:(\d+)$/) {
        json_response($c, $1, { error => 'server_error' }, $delay, \%ra);
        return 1;
    }
    if ($f eq 'invalid_grant' || $f eq 'invalid_client') {
        json_response($c, $f eq 'invalid_grant' ? 400 : 401,
                      { error => $f }, $delay, \%ra);
        return 1;
    }
    if ($f eq 'html') {
        respond($c, 200, { 'Content-Type' => 'text/html' },
                "<html><body>Service temporarily unavailable</body></html>",
                $delay);
        return 1;
    }
    if ($f eq 'truncated') {
        respond($c, 200, { 'Content-Type' => 'application/json' },
                '{"access_token":"at-trunc', $delay);
        return 1;
    }
    if ($f eq 'notoken') {
        json_response($c, 200, { token_type => 'Bearer', expires_in => 60 },
                      $delay);
        return 1;
    }
    if ($f eq 'huge') {
        json_response($c, 200, { access_token => 'a' x (200 * 1024),
                                 expires_in => 60 }, $delay);
        return 1;
    }
    if ($f eq 'badbytes') {
        json_response($c, 200, { access_token => "at-bad\r\nX-Injected: 1",
                                 expires_in => 60 }, $delay);
        return 1;
    }
    return 0;
}

# $family: the grant a refresh belongs to; a new one for a login
sub issue {
    my ($cred, $grant, $with_rt, $family) = @_;
    $family //= ++$st{grants};
    my $at = new_token('access', $cred);
    my $exp = time + $cfg{lifetime};
    $st{access}{$at} = { exp => $exp, revoked => 0, cred => $cred,
                         n => $st{seq}, grant => $family };
    my $rt;
    if ($with_rt) {
        $rt = new_token('refresh', $cred);
        $st{refresh}{$rt} = { cred => $cred, dead => 0, grant => $family };
    }
    return ($at, $exp, $rt);
}

# what a provider does when a spent refresh token comes back: the whole
# grant dies, its refresh tokens and its access tokens
sub revoke_grant {
    my ($family) = @_;
    $st{revoked}{$family} = 1;
    $_->{dead} = 1 for grep { $_->{grant} == $family } values %{ $st{refresh} };
    $_->{revoked} = 1
        for grep { ($_->{grant} // 0) == $family } values %{ $st{access} };
}

sub count_call {
    my ($path, $grant, $cred) = @_;
    $st{calls}++;
    $st{by_grant}{$grant}++;
    $st{by_path}{$path}++;
    $st{by_cred}{$cred}{$grant}++ if defined $cred;
}

# refresh grant bookkeeping shared by /token and /api/tokens/refresh
sub use_refresh {
    my ($rt) = @_;
    my $e = defined $rt ? $st{refresh}{$rt} : undef;
    return undef unless $e;
    if ($e->{dead}) {
        if (!$st{revoked}{$e->{grant}}) {
            $st{reuse}++;
            revoke_grant($e->{grant}) if $cfg{rotate} && $cfg{reuse_revokes};
        }
        return undef;
    }
    $e->{dead} = 1 if $cfg{rotate};
    return wantarray ? ($e->{cred}, $e->{grant}) : $e->{cred};
}

sub idp {
    my ($c, $req) = @_;
    my $p = $req->{path};

    return control($c, $req) if $p =~ m{^/_mock/};

    my $delay = $cfg{delay_ms};

    # the guide's examples use these paths
    $p = '/token' if $p eq '/oauth/token';
    $p = '/nested' if $p eq '/auth/session';

    # and a single backend for a custom login API and its API
    return api($c, $req) if $p =~ m{^/v1/};

    if ($p eq '/token') {
        my $f = form($req->{body});
        my $grant = $f->{grant_type} // 'none';
        my $cred = $f->{username} // $f->{client_id} // '-';
        my $rcred;
        if ($grant eq 'refresh_token') {
            $rcred = $st{refresh}{$f->{refresh_token} // ''}{cred};
            $cred = $rcred // 'unknown';
        }
        count_call($p, $grant, $cred);
        return if fault($c, $grant, $delay);

        my $family;
        if ($grant eq 'refresh_token') {
            ($cred, $family) = use_refresh($f->{refresh_token});
            if (!defined $cred) {
                return json_response($c, 400, { error => 'invalid_grant' },
                                     $delay);
            }
        } elsif ($grant ne 'client_credentials' && $grant ne 'password') {
            return json_response($c, 400, { error => 'unsupported_grant_type' },
                                 $delay);
        }

        my $with_rt = $grant ne 'refresh_token' || $cfg{refresh_rt};
        my ($at, $exp, $rt) = issue($cred, $grant, $with_rt, $family);
        my %out = (access_token => $at, token_type => 'Bearer');
        $out{expires_in} = $cfg{lifetime} if $cfg{expires} eq 'in';
        $out{refresh_token} = $rt if $rt;
        return json_response($c, 200, \%out, $delay);
    }

    if ($p eq '/api/tokens' || $p eq '/api/tokens/refresh') {
        my $in = eval { $json->decode($req->{body}) } // {};
        my $grant = $p eq '/api/tokens' ? 'login' : 'refresh';
        my ($cred, $family);
        if ($grant eq 'login') {
            $cred = $in->{email} // '-';
        } else {
            $cred = $st{refresh}{$in->{refreshToken} // ''}{cred} // 'unknown';
        }
        count_call($p, $grant, $cred);
        return if fault($c, $grant, $delay);
        if ($grant eq 'login') {
            if (($in->{password} // '') ne 'secret-' . ($in->{email} // '')) {
                return json_response($c, 401, { message => 'bad login' },
                                     $delay);
            }
        } else {
            # some backends refresh with both tokens: the expired access
            # token must be one they issued to the same user
            if ($cfg{refresh_needs_access}) {
                my $at = $st{access}{$in->{token} // ''};
                my $rt = $st{refresh}{$in->{refreshToken} // ''};
                if (!$at || !$rt || $at->{cred} ne $rt->{cred}) {
                    return json_response($c, 401,
                        { message => 'refresh needs the access token' },
                        $delay);
                }
            }
            ($cred, $family) = use_refresh($in->{refreshToken});
            return json_response($c, 401, { message => 'bad refresh' },
                                 $delay) unless defined $cred;
        }
        my ($at, $exp, $rt) = issue($cred, $grant, 1, $family);
        my %out = (token => $at, refreshToken => $rt);

        # what a user's app gets beside the tokens, which must reach it
        if ($grant eq 'login') {
            $out{user} = { email => $cred, name => "User $cred",
                           locale => $req->{headers}{'accept-language'}
                                     // 'en' };
            $out{expiresIn} = $cfg{lifetime};
        }
        return json_response($c, 201, \%out, $delay);
    }

    if ($p eq '/revoke') {
        my $f = form($req->{body});
        my $t = $f->{token} // '';
        my $e = $st{refresh}{$t} // $st{access}{$t};
        count_call($p, 'revoke', $e ? $e->{cred} : 'unknown');
        $st{revocations}++;
        revoke_grant($e->{grant}) if $e && defined $e->{grant};

        # RFC 7009 2.2: 200 also for a token the server does not know
        return json_response($c, 200, {}, $delay);
    }

    if ($p eq '/nested') {
        my $f = form($req->{body});
        my $grant = $f->{grant_type} // 'client_credentials';
        my $cred = $f->{client_id} // '-';
        if ($grant eq 'refresh_token') {
            $cred = $st{refresh}{$f->{refresh_token} // ''}{cred} // 'unknown';
        }
        count_call($p, $grant, $cred);
        return if fault($c, $grant, $delay);
        if ($grant eq 'refresh_token') {
            $cred = use_refresh($f->{refresh_token});
            return json_response($c, 400, { error => 'invalid_grant' },
                                 $delay) unless defined $cred;
        }
        my ($at, $exp, $rt) = issue($cred, $grant, 1);
        return json_response($c, 200, {
            status => 'ok',
            data => { accessToken => $at, refreshToken => $rt,
                      accessTokenExp => int($exp * 1000) } }, $delay);
    }

    json_response($c, 404, { error => 'not_found' });
}

sub api {
    my ($c, $req) = @_;
    my $h = $req->{headers};
    my ($token, $style);

    if (defined $h->{authorization}) {
        if ($h->{authorization} =~ /^Bearer (\S+)$/) {
            ($token, $style) = ($1, 'bearer');
        } else {
            ($token, $style) = ($h->{authorization}, 'bare');
        }
    } elsif (defined $h->{'x-api-token'}) {
        ($token, $style) = ($h->{'x-api-token'}, 'x-api-token');
    }

    # ?delay=ms holds this one answer; the token is judged when answering,
    # so that a revocation meanwhile counts
    my ($delay) = $req->{query} =~ /(?:^|&)delay=(\d+)/;
    $delay //= $cfg{api_delay_ms};

    my $answer = sub {
        my $e = defined $token ? $st{access}{$token} : undef;
        my $why = !defined $token ? 'no token'
                : !$e             ? 'unknown token'
                : $e->{revoked}   ? 'revoked token'
                : $e->{exp} <= time ? 'expired token'
                : $cfg{api_reject} ? 'rejected'
                : '';

        if ($why) {
            $st{api}{unauthorized}++;
            return respond($c, 401,
                { 'WWW-Authenticate' => qq{Bearer error="invalid_token"},
                  'Content-Type' => 'text/plain',
                  length $cfg{api_limit_rate}
                  ? ('X-Accel-Limit-Rate' => $cfg{api_limit_rate}) : () },
                "api: $why\n");
        }

        $st{api}{ok}++;

        # /status/NNN answers NNN to an authorized request
        my $status = $req->{path} =~ m{/status/(\d{3})} ? $1 : 200;

        json_response($c, $status, {
            ok => JSON::PP::true, cred => $e->{cred}, token_n => $e->{n},
            style => $style, method => $req->{method}, path => $req->{path},
            query => $req->{query}, body_sha => sha256_hex($req->{body}),
            body_len => length $req->{body} });
    };

    if ($delay) {
        push @timers, [ time + $delay / 1000, $answer ];
    } else {
        $answer->();
    }
}

sub control {
    my ($c, $req) = @_;
    my $p = $req->{path};
    my $in = eval { $json->decode($req->{body} || '{}') } // {};

    if ($p eq '/_mock/reset') {
        reset_state();
        %cfg = (%cfg, %$in);
        return json_response($c, 200, { ok => 1 });
    }
    if ($p eq '/_mock/config') {
        %cfg = (%cfg, %$in);
        return json_response($c, 200, \%cfg);
    }
    if ($p eq '/_mock/grant') {
        # what an operator gets from a one-time authorization-code login;
        # the test may choose the token, to write a seed file beforehand
        my (undef, undef, $rt) = issue($in->{cred} // '-', 'code', 1);
        if (defined $in->{refresh_token}) {
            $st{refresh}{$in->{refresh_token}} = delete $st{refresh}{$rt};
            $rt = $in->{refresh_token};
        }
        return json_response($c, 200, { refresh_token => $rt });
    }
    if ($p eq '/_mock/revoke' && $in->{grants}) {
        # the grants themselves: refresh tokens and access tokens die
        revoke_grant($_) for 1 .. $st{grants};
        return json_response($c, 200, { ok => 1 });
    }
    if ($p eq '/_mock/revoke') {
        # revoke every access token issued so far (or those of one cred)
        for my $e (values %{ $st{access} }) {
            next if defined $in->{cred} && $e->{cred} ne $in->{cred};
            $e->{revoked} = 1;
        }
        return json_response($c, 200, { ok => 1 });
    }
    if ($p eq '/_mock/stats') {
        return json_response($c, 200, {
            calls => $st{calls}, by_grant => $st{by_grant},
            by_cred => $st{by_cred}, by_path => $st{by_path},
            reuse => $st{reuse}, api => $st{api},
            revoked_grants => scalar keys %{ $st{revoked} },
            api_by_path => $st{by_api_path} // {},
            issued => [ sort keys %{ $st{access} } ],
            refresh_issued => [ sort keys %{ $st{refresh} } ],
        });
    }
    if ($p eq '/_mock/calls') {
        # one line a test can compare: "calls=2 client_credentials=1 ..."
        my $line = "calls=$st{calls}";
        $line .= " $_=$st{by_grant}{$_}" for sort keys %{ $st{by_grant} };
        $line .= " reuse=$st{reuse}" if $st{reuse};
        return respond($c, 200, { 'Content-Type' => 'text/plain' },
                       "$line\n");
    }
    if ($p =~ m{^/_mock/corpus/([\w.-]+)$} && defined $corpus) {
        # a token response from the fuzz corpus, as it is
        my $name = $1;
        open my $fh, '<:raw', "$corpus/$name"
            or return json_response($c, 404, { error => "no $name" });
        my $body = do { local $/; <$fh> } // '';
        close $fh;
        count_call($p, 'corpus', $name);
        return respond($c, 200, { 'Content-Type' => 'application/json' },
                       $body);
    }
    if ($p eq '/_mock/receiving') {
        # paths whose request head arrived before their whole body
        return respond($c, 200, { 'Content-Type' => 'text/plain' },
                       join('', map { "$_\n" } sort keys %{ $st{receiving} }));
    }
    if ($p eq '/_mock/echo' || $p =~ m{^/_mock/echo/}) {
        # anything may call it; tests read what it saw from /_mock/requests
        return respond($c, 200, { 'Content-Type' => 'text/plain' }, "echo\n");
    }
    if ($p eq '/_mock/requests') {
        return json_response($c, 200, $st{requests});
    }
    json_response($c, 404, { error => 'no such control' });
}
