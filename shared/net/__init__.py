"""Models from specs: the layer allow-list, the builder, the meta-device dry run, summaries.

layers       which nn.Module classes a spec may name (built-ins + operator entry points)
presets      the seed notes' four models as layer lists
build        spec -> nn.Sequential, every constructor argument checked (build_model)
init_freeze  ModelSpec.init rules and freeze globs
walk         the dry run's forward pass, layer by layer, with errors naming the layer
dryrun       sizes, shapes and the output on the meta device (checked_model, dry_run)
summary      print(model), per-layer shapes, the named_parameters table
order        the model's own order of module and parameter names
weights      a checkpoint's keys and shapes against a model's
"""
