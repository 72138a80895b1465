(import 'relists.libsonnet') +
(import 'cluster.libsonnet') +
(import 'apiservices.libsonnet') +
(import 'audit.libsonnet') +
(import 'apf.libsonnet') +
(import 'stampede.libsonnet')
