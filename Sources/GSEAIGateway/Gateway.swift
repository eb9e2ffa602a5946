import GSEAI
