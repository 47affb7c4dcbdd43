#!/usr/bin/env bash
# Regenerate deploy/k8s/crds/strimzi/ from Maven Central: Strimzi publishes no CRD YAML
# there, but its API model (io.strimzi:api) and the generator its own build runs on it
# (io.strimzi:crd-generator). The arguments are those of the api module's
# generate-crd-co-install-v1 execution (its pom.xml, inside the api jar), for the three
# kinds the manifests use. Deterministic: the same version gives the same bytes
# (sha256 in SOURCES.md).
#
# Needs mvn and a Java 21+ runtime (the generator's class files are Java 21): set JAVA
# to its java binary if the default one is older.
set -euo pipefail

cd "$(dirname "$0")"
STRIMZI_VERSION="${STRIMZI_VERSION:-1.2.0}"
JAVA="${JAVA:-java}"
OUT="$PWD/strimzi"

command -v mvn >/dev/null || { echo "generate-strimzi: mvn (Apache Maven) is not installed" >&2; exit 1; }
"$JAVA" -version >/dev/null 2>&1 || { echo "generate-strimzi: no java at $JAVA" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.runstream</groupId>
  <artifactId>strimzi-crds</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>$STRIMZI_VERSION</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>$STRIMZI_VERSION</version></dependency>
  </dependencies>
</project>
EOF
mvn -B -q -Dstyle.color=never -f "$tmp/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp/lib"
cp="$(find "$tmp/lib" -name '*.jar' | sort | tr '\n' ':')"
mkdir -p "$OUT"
"$JAVA" -cp "$cp" io.strimzi.crdgenerator.CrdGenerator \
  --label app:strimzi --label strimzi.io/crd-install:true --target-kube 1.16+ \
  --crd-api-version v1 --api-versions v1 --storage-version v1 --yaml \
  io.strimzi.api.kafka.model.kafka.Kafka="$OUT/040-Crd-kafka.yaml" \
  io.strimzi.api.kafka.model.topic.KafkaTopic="$OUT/043-Crd-kafkatopic.yaml" \
  io.strimzi.api.kafka.model.nodepool.KafkaNodePool="$OUT/045-Crd-kafkanodepool.yaml"
(cd "$OUT" && sha256sum 040-Crd-kafka.yaml 043-Crd-kafkatopic.yaml 045-Crd-kafkanodepool.yaml)
