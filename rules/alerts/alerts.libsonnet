(import 'relists.libsonnet') +
(import 'stampede.libsonnet') +
(import 'cluster.libsonnet') +
(import 'apiservices.libsonnet') +
(import 'audit.libsonnet') +
(import 'responder.libsonnet') +
(import 'apf.libsonnet')
