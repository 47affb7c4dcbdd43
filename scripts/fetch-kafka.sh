#!/usr/bin/env bash
# Resolve the Apache Kafka broker jars (deploy/kafka/pom.xml) from Maven Central into
# .cache/kafka-libs for the test broker (scripts/kafka_broker.py).
#
# Idempotent: a stamp file records the hash of the pom the jars were resolved from, so a
# second run returns at once; editing the pom triggers a fresh resolution, which replaces
# the folder (stale jars of an old pom never linger on the class path).
set -euo pipefail

cd "$(dirname "$0")/.."

POM=deploy/kafka/pom.xml
LIBS=.cache/kafka-libs
STAMP=$LIBS/.stamp
want="$(sha256sum "$POM" | cut -d' ' -f1)"

if [[ -f $STAMP && "$(cat "$STAMP")" == "$want" ]] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch-kafka: mvn (Apache Maven) is not installed" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch-kafka: java (17+) is not installed" >&2; exit 1; }

tmp="$LIBS.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
echo "fetch-kafka: resolving $POM into $LIBS" >&2
mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/$tmp"
compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { echo "fetch-kafka: no kafka_2.13 jar resolved" >&2; exit 1; }
echo "$want" >"$tmp/.stamp"
rm -rf "$LIBS"
mv "$tmp" "$LIBS"
echo "fetch-kafka: $(ls "$LIBS"/*.jar | wc -l) jars in $LIBS" >&2
