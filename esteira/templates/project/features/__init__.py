# A package, so that no module named `features` elsewhere on sys.path can shadow this folder.
